"""Every loss through the real detector (tiny config, CPU): training step, inference, buffers
in checkpoints; the cascade heads, cosine classifier and normalised mask head."""

import logging

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from longtail_d2.data import ClassStatistics
from longtail_d2.engine import load_config, prepare_run
from longtail_d2.modeling import LongTailOutputLayers
from longtail_d2.modeling.losses import LONGTAIL_LOSS_REGISTRY, SeesawLoss
from longtail_d2.modeling.losses.registry import tail_mask
from longtail_d2.modeling.roi_heads import NormedConv2d, NormedLinear
from tests.conftest import INSTANT

LOSSES = sorted(name for name, _ in LONGTAIL_LOSS_REGISTRY)


def _cfg(*opts):
    return prepare_run(
        INSTANT, ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.NAME", "LongTailROIHeads", *opts]
    )


@pytest.fixture(scope="module")
def batches(datasets_root):
    cfg = _cfg()
    dicts = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[:2]
    train = [DatasetMapper(cfg, is_train=True)(d) for d in dicts]
    test = [DatasetMapper(cfg, is_train=False)(d) for d in dicts]
    return train, test


def _train_and_infer(cfg, batches):
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    with EventStorage():
        losses = model(batches[0])
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        outputs = model(batches[1])
    for out in outputs:
        inst = out["instances"]
        assert torch.all((inst.scores >= 0) & (inst.scores <= 1))
        assert torch.all(inst.pred_classes < cfg.MODEL.ROI_HEADS.NUM_CLASSES)
        assert inst.pred_masks.shape[1:] == batches[1][0]["image"].shape[1:]
    return model, losses


@pytest.mark.parametrize("loss", LOSSES)
def test_each_loss_trains_and_infers(loss, batches):
    cfg = _cfg("MODEL.ROI_BOX_HEAD.CLS_LOSS", loss, "MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CLASSES", "6")
    model, losses = _train_and_infer(cfg, batches)
    predictor = model.roi_heads.box_predictor
    assert isinstance(predictor, LongTailOutputLayers)
    assert predictor.cls_score.out_features == predictor.cls_loss.num_logits
    assert predictor.cls_score.weight.grad.abs().sum() > 0
    if predictor.cls_loss.uses_prior_prob:  # bias -log((1 - pi) / pi), pi = 0.001
        assert predictor.cls_score.bias[0].item() == pytest.approx(-6.9068, abs=1e-3)
    seesaw = isinstance(predictor.cls_loss, SeesawLoss)
    expected = {"loss_cls_classes", "loss_cls_objectness"} if seesaw else {"loss_cls"}
    assert expected | {"loss_box_reg", "loss_mask"} <= set(losses)


def test_cascade_normed_classifier_and_mask_head(batches, tmp_path):
    cfg = _cfg(
        "MODEL.ROI_HEADS.NAME",
        "LongTailCascadeROIHeads",
        "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG",
        "True",
        "MODEL.ROI_BOX_HEAD.CLS_LOSS",
        "EQLv2Loss",
        "MODEL.ROI_BOX_HEAD.NORMED_CLASSIFIER.ENABLED",
        "True",
        "MODEL.ROI_MASK_HEAD.NAME",
        "NormedMaskRCNNConvUpsampleHead",
    )
    model, losses = _train_and_infer(cfg, batches)
    assert {f"loss_cls_stage{i}" for i in range(3)} <= set(losses)
    stages = [p.cls_loss for p in model.roi_heads.box_predictor]
    assert len({id(s) for s in stages}) == 3  # statistics per stage
    assert all(s.neg_grad.sum() > 0 for s in stages)
    assert isinstance(model.roi_heads.mask_head.predictor, NormedConv2d)
    assert isinstance(model.roi_heads.box_predictor[0].cls_score, NormedLinear)
    # The statistics are in the checkpoint and come back with it (what --resume relies on).
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model")
    fresh = build_model(cfg)
    assert fresh.roi_heads.box_predictor[0].cls_loss.neg_grad.sum() == 0
    DetectionCheckpointer(fresh).load(str(tmp_path / "model.pth"))
    for a, b in zip(stages, [p.cls_loss for p in fresh.roi_heads.box_predictor]):
        assert torch.equal(a.pos_grad, b.pos_grad) and torch.equal(a.neg_grad, b.neg_grad)


def test_seesaw_counts_survive_checkpoint(batches, tmp_path):
    cfg = _cfg("MODEL.ROI_BOX_HEAD.CLS_LOSS", "SeesawLoss")
    model, _ = _train_and_infer(cfg, batches)
    counts = model.roi_heads.box_predictor.cls_loss.cum_samples
    assert counts.sum() > 0
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model")
    fresh = build_model(cfg)
    DetectionCheckpointer(fresh).load(str(tmp_path / "model.pth"))
    assert torch.equal(fresh.roi_heads.box_predictor.cls_loss.cum_samples, counts)


def test_losses_are_fp32_under_reduced_precision():
    cfg = _cfg("MODEL.ROI_BOX_HEAD.CLS_LOSS", "SeesawLoss")
    predictor = LongTailOutputLayers(cfg, build_model(cfg).roi_heads.box_head.output_shape)
    proposals = Instances((64, 64))
    proposals.proposal_boxes = Boxes(torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20]]))
    proposals.gt_boxes = Boxes(torch.tensor([[1.0, 1, 10, 10], [5, 5, 21, 20]]))
    proposals.gt_classes = torch.tensor([3, 12])
    scores = torch.randn(2, predictor.cls_loss.num_logits).bfloat16()
    deltas = torch.randn(2, 12 * 4).bfloat16()
    with EventStorage():
        losses = predictor.losses((scores, deltas), [proposals])
    assert all(v.dtype == torch.float32 for v in losses.values())


def test_tail_set_from_groups_or_lambda(caplog):
    # Four classes in 1000 images: image counts 500 (f), 150 (f), 50 (c), 3 (r).
    stats = ClassStatistics(
        np.array([500, 150, 50, 3]), np.array([900, 200, 60, 3]), 1000, ["f", "f", "c", "r"]
    )
    cfg = load_config(INSTANT)
    assert tail_mask(cfg, stats).tolist() == [False, False, True, True]
    only_rare = load_config(INSTANT, ["MODEL.ROI_BOX_HEAD.TAIL.GROUPS", "['r']"])
    assert tail_mask(only_rare, stats).tolist() == [False, False, False, True]
    # lambda = 0.2 takes f = 0.15 (a frequent class) too: a warning names the counts.
    lam = load_config(INSTANT, ["MODEL.ROI_BOX_HEAD.TAIL.LAMBDA", "0.2"])
    with caplog.at_level(logging.WARNING):
        mask = tail_mask(lam, stats)
    assert mask.tolist() == [False, True, True, True]
    assert "including 1 frequent and missing 0 rare/common" in caplog.text
    # lambda = 0.06 is exactly r + c here: no warning.
    caplog.clear()
    exact = load_config(INSTANT, ["MODEL.ROI_BOX_HEAD.TAIL.LAMBDA", "0.06"])
    with caplog.at_level(logging.WARNING):
        assert tail_mask(exact, stats).tolist() == [False, False, True, True]
    assert "TAIL.LAMBDA" not in caplog.text


def test_num_classes_mismatch_is_an_error(datasets_root):
    cfg = _cfg("MODEL.ROI_HEADS.NUM_CLASSES", "7", "MODEL.ROI_BOX_HEAD.CLS_LOSS", "EQLLoss")
    with pytest.raises(ValueError, match="NUM_CLASSES is 7"):
        build_model(cfg)


def test_core_fed_loss_switch_is_rejected(datasets_root):
    cfg = _cfg("MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE", "True")
    with pytest.raises(ValueError, match="CLS_LOSS"):
        build_model(cfg)


@pytest.mark.parametrize("loss", ["SoftmaxCELoss", "SeesawLoss", "EQLv2Loss"])
def test_pcb_heads_train_infer_and_checkpoint(loss, batches, tmp_path):
    cfg = _cfg(
        "MODEL.ROI_HEADS.NAME",
        "PCBROIHeads",
        "MODEL.ROI_BOX_HEAD.CLS_LOSS",
        loss,
        "MODEL.ROI_BOX_HEAD.PCB.START_ITER",
        "0",
        "MODEL.ROI_BOX_HEAD.PCB.MLP_HIDDEN",
        "32",
    )
    model, losses = _train_and_infer(cfg, batches)
    assert {"loss_box_reg"} | {k for k in losses if k.endswith("_pass2")} <= set(losses)
    assert len([k for k in losses if "pass" in k]) == 3 * (2 if loss == "SeesawLoss" else 1)
    heads = model.roi_heads
    assert heads.channel_mlp[0].weight.grad.abs().sum() > 0  # the modulation MLPs train
    assert heads.spatial_mlp[0].weight.grad.abs().sum() > 0
    confusion = heads.box_predictor.confusion
    assert confusion.seen.sum() > 0
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model")
    fresh = build_model(cfg)
    DetectionCheckpointer(fresh).load(str(tmp_path / "model.pth"))
    assert torch.equal(fresh.roi_heads.box_predictor.confusion.matrix, confusion.matrix)


def test_pcb_gate(batches):
    cfg = _cfg(
        "MODEL.ROI_HEADS.NAME",
        "PCBROIHeads",
        "MODEL.ROI_BOX_HEAD.PCB.START_ITER",
        "5",
        "MODEL.ROI_BOX_HEAD.PCB.MLP_HIDDEN",
        "32",
    )
    model = build_model(cfg)
    model.train()
    predictor = model.roi_heads.box_predictor
    with EventStorage(start_iter=0) as storage:  # before START_ITER: inactive
        model(batches[0])
        assert storage.latest()["pcb_active"][0] == 0.0
    # After START_ITER, with one class unseen so far and absent from the batch: inactive.
    present = set(torch.cat([b["instances"].gt_classes for b in batches[0]]).tolist())
    absent = min(set(range(cfg.MODEL.ROI_HEADS.NUM_CLASSES)) - present)
    with EventStorage(start_iter=10) as storage:
        predictor.confusion.seen.fill_(1)
        predictor.confusion.seen[absent] = 0
        model(batches[0])
        assert predictor.confusion.seen[absent] == 0
        assert storage.latest()["pcb_active"][0] == 0.0
    predictor.confusion.seen.fill_(1)
    with EventStorage(start_iter=10) as storage:
        model(batches[0])
        assert storage.latest()["pcb_active"][0] == 1.0


def test_pcb_needs_a_supported_loss(datasets_root):
    cfg = _cfg("MODEL.ROI_HEADS.NAME", "PCBROIHeads", "MODEL.ROI_BOX_HEAD.CLS_LOSS", "EQLLoss")
    with pytest.raises(ValueError, match="PCB is defined on"):
        build_model(cfg)


def test_fasa_heads_train_infer_and_checkpoint(batches, tmp_path):
    cfg = _cfg(
        "MODEL.ROI_HEADS.NAME",
        "FASAROIHeads",
        "MODEL.ROI_BOX_HEAD.FASA.START_ITER",
        "0",
        "MODEL.ROI_BOX_HEAD.FASA.PROB_SCALE",
        "12.0",
    )
    model, losses = _train_and_infer(cfg, batches)
    assert "loss_cls_virtual" in losses
    predictor = model.roi_heads.box_predictor
    assert predictor.feature_stats.used.sum() > 0
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model")
    fresh = build_model(cfg)
    DetectionCheckpointer(fresh).load(str(tmp_path / "model.pth"))
    fresh_predictor = fresh.roi_heads.box_predictor
    assert torch.equal(fresh_predictor.feature_stats.mean, predictor.feature_stats.mean)
    assert torch.equal(fresh_predictor.sample_probs, predictor.sample_probs)


def test_virtual_features_train_the_classifier_only(datasets_root):
    cfg = _cfg("MODEL.ROI_HEADS.NAME", "FASAROIHeads", "MODEL.ROI_BOX_HEAD.FASA.START_ITER", "0")
    model = build_model(cfg)
    predictor = model.roi_heads.box_predictor
    predictor.sample_probs.fill_(1.0)
    features = torch.randn(4, predictor.cls_score.in_features, requires_grad=True)
    proposals = Instances((64, 64))
    proposals.gt_classes = torch.tensor([0, 1, 2, 12])
    with EventStorage():
        loss = predictor.fasa_losses(features, [proposals])["loss_cls_virtual"]
    loss.backward()
    assert loss.item() > 0
    assert features.grad is None  # no path back to the box head
    assert predictor.cls_score.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.roi_heads.box_head.parameters())


def test_fasa_needs_softmax(datasets_root):
    cfg = _cfg("MODEL.ROI_HEADS.NAME", "FASAROIHeads", "MODEL.ROI_BOX_HEAD.CLS_LOSS", "EQLLoss")
    with pytest.raises(ValueError, match="FASA adapts"):
        build_model(cfg)


def test_pcb_statistics_move_once_per_step(batches):
    """Seesaw's counts after one step of the three-pass head are the counts of that step's
    RoIs, once (the reference code triples them)."""
    cfg = _cfg(
        "MODEL.ROI_HEADS.NAME",
        "PCBROIHeads",
        "MODEL.ROI_BOX_HEAD.CLS_LOSS",
        "SeesawLoss",
        "MODEL.ROI_BOX_HEAD.PCB.MLP_HIDDEN",
        "32",
    )
    model = build_model(cfg)
    model.train()
    loss_module = model.roi_heads.box_predictor.cls_loss
    labels = []
    loss_module.register_forward_hook(lambda m, i, o: labels.append(i[1]))
    with EventStorage():
        model(batches[0])
    assert len(labels) == 3 and all(torch.equal(labels[0], y) for y in labels)
    C = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    once = torch.bincount(labels[0], minlength=C + 1)[:C].float()
    assert once.sum() > 0
    torch.testing.assert_close(loss_module.cum_samples, once)
    assert loss_module.training and loss_module.updates_statistics
