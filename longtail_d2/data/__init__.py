from .class_statistics import (
    ClassStatistics,
    category_frequency,
    compute_class_statistics,
    get_class_statistics,
    rfs_repeat_factors,
    training_class_statistics,
)
from .lvis_json import DatasetError, load_longtail_json
from .register import (
    SYNTHETIC_TRAIN,
    SYNTHETIC_VAL,
    lvis_ground_truth,
    register_datasets_from_config,
    register_longtail_dataset,
)
from .synthetic import SyntheticConfig, ensure_synthetic_dataset, generate_longtail_dataset
