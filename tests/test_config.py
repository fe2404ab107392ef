import glob
import os

import pytest
from detectron2.config import get_cfg

from longtail_d2.config import add_longtail_config
from longtail_d2.engine import ConfigError, load_config
from tests.conftest import REPO


def test_keys_and_defaults():
    cfg = add_longtail_config(get_cfg())
    assert cfg.DATASETS.CUSTOM == []
    assert cfg.DATASETS.SYNTHETIC.ROOT == ""
    assert cfg.DATASETS.SYNTHETIC.NUM_CLASSES == 30
    assert cfg.TEST.LVIS_MAX_DETS_PER_IMAGE == 300


def test_misspelled_key_is_an_error():
    with pytest.raises(ConfigError, match="DATASETS.CUSTOMS"):
        load_config("", ["DATASETS.CUSTOMS", "[]"])


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="DATASETS.SYNTHETIC.SEED"):
        load_config("", ["DATASETS.SYNTHETIC.SEED", "seven"])


def test_misspelled_key_in_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("SOLVER:\n  MAX_ITR: 5\n")
    with pytest.raises(ConfigError, match="bad.yaml.*SOLVER.MAX_ITR"):
        load_config(str(path))


def test_amp_needs_gpu():
    with pytest.raises(ConfigError, match="SOLVER.AMP.ENABLED"):
        load_config("", ["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "True"])


YAMLS = sorted(
    glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
    + glob.glob(os.path.join(REPO, "projects", "**", "*.yaml"), recursive=True)
)


@pytest.mark.parametrize("path", YAMLS, ids=[os.path.relpath(p, REPO) for p in YAMLS])
def test_every_yaml_loads(path):
    cfg = load_config(path)
    if "LVISv0.5" in path:
        assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 1230
    if "LVISv1" in path:
        assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 1203
    if "mask_rcnn" in os.path.basename(path):
        # No shipped leaf config pairs a batch size with a foreign learning rate.
        assert cfg.SOLVER.BASE_LR / cfg.SOLVER.IMS_PER_BATCH == pytest.approx(
            0.02 / 16 if "LVIS" in path else 0.01 / 4, rel=0.51
        )
    if "_rfs" in os.path.basename(path):
        assert cfg.DATALOADER.SAMPLER_TRAIN == "RepeatFactorTrainingSampler"
        if "LVIS" in path or "lvis" in path:
            # 1e-3 (LVIS paper, detectron2, mmdet) or EQL / DropLoss's 5e-4.
            assert cfg.DATALOADER.REPEAT_THRESHOLD in (0.001, 0.0005)
