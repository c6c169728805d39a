"""Training: the train state, pure steps, the Trainer shell, callbacks, data-parallel sharding, and
populations (members of one model trained together as one vmapped program)."""
from fluxnet.train.callbacks import Callback, EarlyStopping, History, MetricsLog, Profile, TensorBoard
from fluxnet.train.population import Member, Population
from fluxnet.train.state import TrainState
from fluxnet.train.trainer import Trainer

__all__ = ["Trainer", "TrainState", "Callback", "History", "EarlyStopping", "TensorBoard", "MetricsLog",
           "Member", "Population", "Profile"]
