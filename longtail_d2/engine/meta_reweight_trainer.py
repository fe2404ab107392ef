"""The trainer of BALMS's decoupled stage 2 with meta re-weighting (META_REWEIGHT.ENABLED).

Every iteration: the RoI box features of a training batch and of a class-balanced meta batch
(everything below the classifier is frozen, so no gradient is needed there); a meta step on the
class weights (:func:`longtail_d2.modeling.meta_reweight.meta_step`); then the real step of the
classifier on the training batch with the updated weights. Gradients of the classifier and of
theta are averaged over workers explicitly, so the model is not wrapped in DDP. The learner and
its Adam state are checkpointed next to the model.
"""

import time

import torch
from detectron2.data import get_detection_dataset_dicts
from detectron2.engine import SimpleTrainer
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

from ..data.class_balanced_sampler import ClassBalancedSampler, class_balanced_repeat_factors
from ..data.resumable_loader import build_resumable_train_loader
from ..modeling.distributed import all_reduce_sum
from ..modeling.losses import LONGTAIL_LOSS_REGISTRY, BalancedSigmoidLoss
from ..modeling.meta_reweight import META_OBJECTIVES, MetaReweighter, balms_loss, meta_step
from ..modeling.roi_heads import LongTailOutputLayers, LongTailROIHeads
from .roi_features import check_roi_features_supported, roi_box_features
from .trainer import LongTailTrainer

__all__ = [
    "MetaReweightTrainer",
    "MetaReweightLoop",
    "meta_reweight_config_problems",
]


class MetaReweightLoop(SimpleTrainer):
    def __init__(
        self,
        model,
        data_loader,
        optimizer,
        meta_loader,
        learner,
        meta_optimizer,
        classifier,
        class_freq,
        meta_objective="balanced",
    ):
        """
        Args:
            classifier: the trained layer, (R, D) box-head features -> (R, C) logits.
            class_freq: (C,) training image frequency of the Balanced Sigmoid loss.
            meta_objective: a key of META_OBJECTIVES.
        """
        super().__init__(model, data_loader, optimizer)
        self.meta_loader = meta_loader
        self._meta_iter = None
        self.learner = learner
        self.meta_optimizer = meta_optimizer
        self.classifier = classifier
        self.class_freq = class_freq
        self.meta_objective = meta_objective

    def run_step(self):
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        if self._meta_iter is None:
            self._meta_iter = iter(self.meta_loader)
        meta_data = next(self._meta_iter)
        data_time = time.perf_counter() - start

        train_batch = roi_box_features(self.model, data)
        meta_batch = roi_box_features(self.model, meta_data)
        world = comm.get_world_size()
        meta = meta_step(
            self.learner,
            self.meta_optimizer,
            self.classifier,
            self.optimizer,
            self.class_freq,
            train_batch,
            meta_batch,
            world,
            self.meta_objective,
        )
        # The real step, with the class weights just updated (constants here).
        features, gt_classes = train_batch
        loss = balms_loss(
            self.classifier(features), gt_classes, self.class_freq, self.learner().detach()
        )
        self.optimizer.zero_grad()
        loss.backward()
        for p in self.classifier.parameters():
            p.grad = all_reduce_sum(p.grad) / world
        self.after_backward()
        # The meta loss is logged apart: it is not part of the loss being minimised.
        get_event_storage().put_scalar("meta_loss", meta["loss_meta"].item())
        self._write_metrics({"loss_cls": loss}, data_time)
        self.optimizer.step()


class MetaReweightTrainer(LongTailTrainer):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.checkpointer.add_checkpointable("meta_reweighter", self._trainer.learner)
        self.checkpointer.add_checkpointable("meta_optimizer", self._trainer.meta_optimizer)

    def wrap_model(self, cfg, model):
        return model  # gradients are averaged by the loop (see the module docstring)

    def build_train_loop(self, cfg, model, data_loader, optimizer):
        learner = MetaReweighter(cfg.MODEL.ROI_HEADS.NUM_CLASSES, cfg.META_REWEIGHT.INIT_WEIGHT)
        learner.to(model.device)
        meta_optimizer = torch.optim.Adam(learner.parameters(), lr=cfg.META_REWEIGHT.LR)
        check_roi_features_supported(model.roi_heads)
        predictor: LongTailOutputLayers = model.roi_heads.box_predictor
        return MetaReweightLoop(
            model,
            data_loader,
            optimizer,
            self.build_meta_loader(cfg),
            learner,
            meta_optimizer,
            classifier=predictor.classifier,
            class_freq=predictor.class_frequency,
            meta_objective=cfg.META_REWEIGHT.META_OBJECTIVE,
        )

    @classmethod
    def build_meta_loader(cls, cfg):
        """Class-balanced batches of META_REWEIGHT.IMS_PER_BATCH images of DATASETS.TRAIN,
        resumable exactly like the training loader (its own stream of per-sample seeds)."""
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
        )
        factors = class_balanced_repeat_factors(dataset)
        return build_resumable_train_loader(
            cfg,
            dataset=dataset,
            sampler_factory=lambda seed: ClassBalancedSampler(factors, seed=seed),
            total_batch_size=cfg.META_REWEIGHT.IMS_PER_BATCH,
            stream=1,
        )


def meta_reweight_config_problems(cfg):
    """What a config with META_REWEIGHT.ENABLED lacks (empty if nothing)."""
    problems = []
    if not cfg.MODEL.DECOUPLE.ENABLED or list(cfg.MODEL.DECOUPLE.TRAINABLE) != [
        "roi_heads.box_predictor.cls_score"
    ]:
        problems.append(
            "MODEL.DECOUPLE.ENABLED True with TRAINABLE ['roi_heads.box_predictor."
            "cls_score'] (only the classifier is meta-trained)"
        )
    # By type, so that subclasses and registry aliases qualify: the standard box path (RoI
    # features are replayed) with longtail_d2's predictor, and the loss balms_loss re-weights.
    heads = ROI_HEADS_REGISTRY.get(cfg.MODEL.ROI_HEADS.NAME)
    if not issubclass(heads, LongTailROIHeads) or heads._forward_box is not (
        LongTailROIHeads._forward_box
    ):
        problems.append("MODEL.ROI_HEADS.NAME LongTailROIHeads")
    loss = LONGTAIL_LOSS_REGISTRY.get(cfg.MODEL.ROI_BOX_HEAD.CLS_LOSS)
    if not issubclass(loss, BalancedSigmoidLoss):
        problems.append("MODEL.ROI_BOX_HEAD.CLS_LOSS BalancedSigmoidLoss")
    if cfg.SOLVER.AMP.ENABLED:
        problems.append("SOLVER.AMP.ENABLED False")
    if cfg.META_REWEIGHT.META_OBJECTIVE not in META_OBJECTIVES:
        problems.append(
            f"META_REWEIGHT.META_OBJECTIVE one of {sorted(META_OBJECTIVES)}, "
            f"not {cfg.META_REWEIGHT.META_OBJECTIVE!r}"
        )
    return problems
