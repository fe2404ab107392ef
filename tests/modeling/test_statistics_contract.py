"""The one contract of stateful losses (ClassificationLoss.frozen_statistics), for every loss in
LONGTAIL_LOSS_REGISTRY (a new loss is checked without touching a list), directly and through
PCB's three-pass head; and decisions by type, which a renamed subclass keeps."""

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from longtail_d2.config import add_longtail_config
from longtail_d2.data import ClassStatistics
from longtail_d2.modeling.losses import LONGTAIL_LOSS_REGISTRY, SeesawLoss, SoftmaxCELoss
from longtail_d2.modeling.pcb import pcb_variant
from longtail_d2.modeling.roi_heads import PCBOutputLayers

C = 4
LOSSES = sorted(name for name, _ in LONGTAIL_LOSS_REGISTRY)
# Image counts 60, 30, 5, 1 of 100 annotated images: groups c, c, r, r.
STATS = ClassStatistics(
    np.array([60, 30, 5, 1]), np.array([90, 40, 5, 1]), 100, ["c", "c", "r", "r"]
)


def _cfg(loss, *opts):
    cfg = add_longtail_config(get_cfg())
    cfg.merge_from_list(
        ["MODEL.ROI_HEADS.NUM_CLASSES", str(C), "MODEL.ROI_BOX_HEAD.CLS_LOSS", loss, *opts]
    )
    return cfg


def _batch(loss, seed=0):
    g = torch.Generator().manual_seed(seed)
    gt = torch.tensor([0, 1, 2, 3, C, C, 0, 2])
    return torch.randn(len(gt), loss.num_logits, generator=g), gt


def _buffers(module):
    return {k: v.clone() for k, v in module.named_buffers()}


def _changed(before, module):
    return sorted(k for k, v in module.named_buffers() if not torch.equal(v, before[k]))


@pytest.mark.parametrize("name", LOSSES)
def test_frozen_statistics_contract(name):
    cfg = _cfg(name, "MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CLASSES", "3")
    loss = LONGTAIL_LOSS_REGISTRY.get(name)(cfg, STATS)
    loss.train()
    logits, gt = _batch(loss)
    before = _buffers(loss)
    with loss.frozen_statistics():
        assert not loss.updates_statistics
        frozen = loss(logits, gt)
    assert loss.training and loss.updates_statistics  # the block leaves the mode as it was
    assert _changed(before, loss) == []
    torch.manual_seed(0)
    loss(logits, gt)
    moved = _changed(before, loss)
    if loss.has_running_statistics:
        assert moved, f"{name} declares running statistics but none moved"
    else:
        assert moved == [], f"{name} moved {moved} without declaring running statistics"
    # Evaluation mode never moves them either.
    loss.eval()
    after = _buffers(loss)
    loss(logits, gt)
    assert _changed(after, loss) == []
    assert all(torch.isfinite(v) for v in frozen.values())


def _pcb_predictor(name):
    cfg = _cfg(
        name,
        "MODEL.ROI_BOX_HEAD.PCB.START_ITER",
        "1000",  # inactive: every pass calls the loss without soft targets
        "MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CLASSES",
        "3",
    )
    return PCBOutputLayers(cfg, ShapeSpec(channels=8), class_stats=STATS)


@pytest.mark.parametrize("name", LOSSES)
def test_pcb_moves_statistics_once_per_step(name):
    """Through PCB's freeze: three passes move a loss's statistics exactly as one call of the
    loss on the last pass does; PCB refuses a loss it has no variant for."""
    loss_cls = LONGTAIL_LOSS_REGISTRY.get(name)
    if pcb_variant(loss_cls) is None:
        with pytest.raises(ValueError, match="PCB is defined on"):
            _pcb_predictor(name)
        return
    predictor = _pcb_predictor(name)
    predictor.train()
    alone = loss_cls(_cfg(name), STATS)
    alone.train()
    proposals = Instances((64, 64))
    gt = torch.tensor([0, 1, 2, 3, C, C, 0, 2])
    boxes = torch.tensor([[0.0, 0, 10, 10]]).repeat(len(gt), 1)
    proposals.proposal_boxes, proposals.gt_boxes = Boxes(boxes), Boxes(boxes)
    proposals.gt_classes = gt
    deltas = torch.zeros(len(gt), 4 * C)
    passes = [(_batch(predictor.cls_loss, seed=t)[0], deltas) for t in range(3)]
    with EventStorage():
        predictor.iterative_losses(passes, [proposals], (0.2, 0.2, 0.6), 2)
    alone(passes[-1][0], gt)
    for key, value in alone.named_buffers():
        torch.testing.assert_close(predictor.cls_loss.get_buffer(key), value, msg=key)


def test_a_renamed_subclass_keeps_its_capabilities():
    class RenamedSeesaw(SeesawLoss):
        pass

    class RenamedSoftmax(SoftmaxCELoss):
        pass

    assert pcb_variant(RenamedSeesaw) is pcb_variant(SeesawLoss) is not None
    assert RenamedSeesaw.has_running_statistics
    from longtail_d2.modeling.roi_heads import FASAOutputLayers

    cfg = _cfg("SoftmaxCELoss", "MODEL.ROI_BOX_HEAD.FASA.START_ITER", "0")
    fasa = FASAOutputLayers(cfg, ShapeSpec(channels=8), class_stats=STATS)
    fasa_renamed = FASAOutputLayers(
        cfg, ShapeSpec(channels=8), class_stats=STATS, cls_loss=RenamedSoftmax(num_classes=C)
    )
    assert type(fasa_renamed.cls_loss) is RenamedSoftmax and fasa.num_classes == C
