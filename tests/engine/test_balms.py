"""BALMS end to end on the generated dataset: stage 1, then decoupled stage 2 (Balanced Softmax
with and without meta re-weighting) through train_net.py."""

import os
import shutil

import pytest
import torch

from tests.conftest import REPO, read_metrics, run_train_net

CONFIGS = os.path.join(REPO, "projects", "BALMS", "configs")


def _check(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def stage1(tmp_path_factory, datasets_root):
    out = str(tmp_path_factory.mktemp("stage1"))
    _check(
        run_train_net(
            "--config-file",
            os.path.join(CONFIGS, "sigmoid_mask_rcnn_R_18_FPN_instant_rfs.yaml"),
            "SOLVER.MAX_ITER",
            "6",
            "OUTPUT_DIR",
            out,
        )
    )
    return os.path.join(out, "model_final.pth")


def _stage2(config, stage1, out, *opts, flags=()):
    _check(
        run_train_net(
            *flags,
            "--config-file",
            os.path.join(CONFIGS, config),
            "MODEL.WEIGHTS",
            stage1,
            "OUTPUT_DIR",
            str(out),
            *opts
        )
    )
    return torch.load(os.path.join(str(out), "model_final.pth"), weights_only=False)


def _only_classifier_changed(stage1, stage2_model):
    before = torch.load(stage1, weights_only=False)["model"]
    changed = [
        k for k in before if k in stage2_model and not torch.equal(before[k], stage2_model[k])
    ]
    assert sorted(changed) == [
        "roi_heads.box_predictor.cls_score.bias",
        "roi_heads.box_predictor.cls_score.weight",
    ]


@pytest.mark.parametrize(
    "config",
    ["balanced_softmax_decoupled_R_18_FPN_instant.yaml", "balms_decoupled_R_18_FPN_instant.yaml"],
)
def test_stage2_changes_only_the_classifier(config, stage1, tmp_path):
    ckpt = _stage2(config, stage1, tmp_path / "s2")
    _only_classifier_changed(stage1, ckpt["model"])
    assert "segm/APr" in read_metrics(str(tmp_path / "s2"))
    if config.startswith("balms"):
        theta = ckpt["meta_reweighter"]["theta"]
        assert theta.shape == (12,) and theta.abs().sum() > 0  # moved from sigmoid^-1(0.5) = 0
        assert "state" in ckpt["meta_optimizer"]


def test_balms_with_two_gloo_processes(stage1, tmp_path):
    out = tmp_path / "ddp"
    ckpt = _stage2(
        "balms_decoupled_R_18_FPN_instant.yaml",
        stage1,
        out,
        "MODEL.DEVICE",
        "cpu",
        "SOLVER.MAX_ITER",
        "3",
        flags=("--num-gpus", "2"),
    )
    _only_classifier_changed(stage1, ckpt["model"])
    assert "World size: 2" in (out / "log.txt").read_text()


def test_resume_restores_the_learner(stage1, tmp_path, datasets_root):
    from longtail_d2.engine import MetaReweightTrainer, prepare_run

    first = tmp_path / "first"
    _stage2("balms_decoupled_R_18_FPN_instant.yaml", stage1, first)
    # Interrupted after the checkpoint of iteration 2.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(first / "model_0000002.pth", resumed)
    (resumed / "last_checkpoint").write_text("model_0000002.pth")
    saved = torch.load(resumed / "model_0000002.pth", weights_only=False)
    cfg = prepare_run(
        os.path.join(CONFIGS, "balms_decoupled_R_18_FPN_instant.yaml"),
        ["MODEL.WEIGHTS", stage1, "OUTPUT_DIR", str(resumed), "MODEL.DEVICE", "cpu"],
    )
    trainer = MetaReweightTrainer(cfg)
    assert trainer._trainer.meta_objective == "balanced"  # the default, the reference's
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 3
    torch.testing.assert_close(
        trainer._trainer.learner.theta.detach(), saved["meta_reweighter"]["theta"]
    )
    assert trainer._trainer.meta_optimizer.state_dict()["state"]


def test_meta_reweight_needs_decoupled_balanced_softmax(tmp_path, datasets_root):
    proc = run_train_net(
        "--config-file",
        os.path.join(CONFIGS, "balms_decoupled_R_18_FPN_instant.yaml"),
        "MODEL.DECOUPLE.ENABLED",
        "False",
        "OUTPUT_DIR",
        str(tmp_path / "x"),
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: META_REWEIGHT.ENABLED needs MODEL.DECOUPLE.ENABLED")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "opts,problem",
    [
        ([], None),
        (["MODEL.ROI_BOX_HEAD.CLS_LOSS", "BalancedSoftmaxLoss"], None),  # the documented alias
        (["MODEL.ROI_BOX_HEAD.CLS_LOSS", "SigmoidCELoss"], "CLS_LOSS BalancedSigmoidLoss"),
        (["MODEL.ROI_HEADS.NAME", "PCBROIHeads"], "ROI_HEADS.NAME LongTailROIHeads"),
        (["MODEL.ROI_HEADS.NAME", "LongTailCascadeROIHeads"], "ROI_HEADS.NAME LongTailROIHeads"),
        (["META_REWEIGHT.META_OBJECTIVE", "plain"], None),
        (
            ["META_REWEIGHT.META_OBJECTIVE", "shifted"],
            "META_REWEIGHT.META_OBJECTIVE one of ['balanced', 'plain'], not 'shifted'",
        ),
    ],
)
def test_meta_reweight_requirements_by_type(opts, problem):
    from longtail_d2.engine import load_config
    from longtail_d2.engine.meta_reweight_trainer import meta_reweight_config_problems

    config = os.path.join(CONFIGS, "balms_decoupled_R_18_FPN_instant.yaml")
    cfg = load_config(config, ["META_REWEIGHT.ENABLED", "False", *opts])
    cfg.defrost()
    cfg.META_REWEIGHT.ENABLED = True
    problems = meta_reweight_config_problems(cfg)
    assert problems == [] if problem is None else any(problem in p for p in problems)


@pytest.mark.parametrize(
    "opts",
    [
        ["MODEL.ROI_HEADS.NAME", "LongTailCascadeROIHeads"],
        ["MODEL.ROI_HEADS.NAME", "PCBROIHeads", "MODEL.ROI_BOX_HEAD.PCB.MLP_HIDDEN", "8"],
    ],
)
def test_roi_features_refuse_heads_they_cannot_replay(opts, datasets_root):
    """BALMS's and FASA's RoI-feature replay assumes detectron2's standard box path."""
    from detectron2.modeling import build_model

    from longtail_d2.engine import prepare_run
    from longtail_d2.engine.roi_features import roi_box_features
    from tests.conftest import INSTANT

    agnostic = ["MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", "True"]
    cfg = prepare_run(INSTANT, ["MODEL.DEVICE", "cpu", *agnostic, *opts])
    model = build_model(cfg)
    with pytest.raises(ValueError, match="cannot replay") as info:
        roi_box_features(model, [])
    assert "MODEL.ROI_HEADS.NAME" in str(info.value) and "\n" not in str(info.value)
