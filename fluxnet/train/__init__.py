"""Training: the train state, pure steps, the Trainer shell, callbacks and data-parallel sharding."""
from fluxnet.train.callbacks import Callback, EarlyStopping, History, MetricsLog, TensorBoard
from fluxnet.train.state import TrainState
from fluxnet.train.trainer import Trainer

__all__ = ["Trainer", "TrainState", "Callback", "History", "EarlyStopping", "TensorBoard", "MetricsLog"]
