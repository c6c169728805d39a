"""Keras' callbacks (``fx.callbacks``), with Keras' names, arguments and defaults.

Two kinds of callback train a model. ``Callback`` is Keras' base class: hooks such as
``on_epoch_end(epoch, logs=None)`` that reach the training through ``self.model`` (for
``model.fit``). ``TrainerCallback`` is the protocol of ``fluxnet.Trainer.fit``, where hooks receive
the train state and may return a replacement (``fluxnet.train.callbacks``); the callbacks below
follow it, so they work with ``model.fit`` and ``Trainer.fit`` alike. ``as_trainer_callback(cb,
model)`` turns a Keras-style callback into a Trainer one.
"""
from fluxnet.train.callbacks import Callback as TrainerCallback
from fluxnet.train.callbacks import CSVLogger, EarlyStopping, History, LambdaCallback, TensorBoard, TerminateOnNaN
from fluxnet.train.checkpoint_callbacks import BackupAndRestore, ModelCheckpoint
from fluxnet.train.keras_callback import Callback, as_trainer_callback
from fluxnet.train.lr_callbacks import LearningRateScheduler, ReduceLROnPlateau

__all__ = ["BackupAndRestore", "CSVLogger", "Callback", "EarlyStopping", "History", "LambdaCallback",
           "LearningRateScheduler", "ModelCheckpoint", "ReduceLROnPlateau", "TensorBoard", "TerminateOnNaN",
           "TrainerCallback", "as_trainer_callback"]
