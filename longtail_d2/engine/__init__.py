from .setup import ConfigError, load_config, prepare_run
from .trainer import LongTailTrainer, ddp_device_kwargs
