"""The federated loss (Zhou et al., "Probabilistic two-stage detection", arXiv 2103.07461,
appendix; detectron2's ``USE_FED_LOSS``).

Sigmoid BCE restricted to a class subset F per iteration: the classes of the sampled RoIs plus
negatives drawn with probability proportional to image_count^power until |F| reaches
FED_LOSS_NUM_CLASSES. detectron2 reads image counts from LVIS v1 metadata only; here they come
from the class statistics of DATASETS.TRAIN, so LVIS v0.5 and custom datasets work too.
"""

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from detectron2.utils import comm

from .base import ClassificationLoss
from .registry import LONGTAIL_LOSS_REGISTRY
from .sigmoid_ce import positive_positions, sigmoid_bce, sigmoid_scores

__all__ = ["FederatedLoss"]


@LONGTAIL_LOSS_REGISTRY.register()
class FederatedLoss(ClassificationLoss):
    """
    Logits (R, C + 1) as in detectron2 (the last one unused); scores sigma(z) of the C classes
    plus a zero background column. Buffers: fed_loss_cls_weights (C,) = image_count^power; with
    a draw seed >= 0 also fed_draws (), the number of draws of F so far (in checkpoints).
    """

    extra_logits = 1
    uses_prior_prob = True  # CenterNet2's bias init from PRIOR_PROB (0.01 in its configs)
    has_background_score = False
    # detectron2's sampling of F, reused as is (it reads no other attribute of the predictor).
    get_fed_loss_classes = FastRCNNOutputLayers.get_fed_loss_classes

    @configurable
    def __init__(
        self,
        num_classes: int,
        class_weights: torch.Tensor,
        num_fed_classes: int = 50,
        draw_seed: int = -1,
    ):
        """
        Args:
            draw_seed: -1 draws F with torch's global generator (detectron2). >= 0: draw k of F
                uses a generator seeded with (draw_seed, rank, k), so F's sequence is the same
                whatever the run's SEED and leaves the global stream to the rest of the run;
                k is the buffer fed_draws, so a resumed run continues the sequence.
        """
        super().__init__(num_classes)
        assert class_weights.shape == (num_classes,), class_weights.shape
        self.num_fed_classes = num_fed_classes
        self.register_buffer("fed_loss_cls_weights", class_weights.clone().float())
        self.draw_seed = draw_seed
        if draw_seed >= 0:
            self.register_buffer("fed_draws", torch.zeros((), dtype=torch.int64))

    @classmethod
    def from_config(cls, cfg, stats):
        num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        counts = torch.as_tensor(stats.image_count, dtype=torch.float32)
        return {
            "num_classes": num_classes,
            "class_weights": counts.pow(cfg.MODEL.ROI_BOX_HEAD.FED_LOSS_FREQ_WEIGHT_POWER),
            "num_fed_classes": cfg.MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CLASSES,
            "draw_seed": cfg.MODEL.ROI_BOX_HEAD.FED_LOSS_DRAW_SEED,
        }

    def fed_classes(self, gt_classes):
        """The class subset F of one iteration: the classes in ``gt_classes`` (R,) (background
        C included when present) plus negatives drawn by detectron2's sampler."""
        C = self.num_classes
        # detectron2's sampler draws without replacement: never ask it for more classes than
        # have a non-zero weight outside those present.
        present = torch.unique(gt_classes)
        present_fg = present[present < C]
        available = int((self.fed_loss_cls_weights > 0).sum()) - int(
            (self.fed_loss_cls_weights[present_fg] > 0).sum()
        )
        num_fed = min(self.num_fed_classes, len(present) + available)
        if self.draw_seed < 0:
            return self.get_fed_loss_classes(gt_classes, num_fed, C, self.fed_loss_cls_weights)
        # detectron2's sampler with a generator of its own.
        seed = np.random.SeedSequence([self.draw_seed, comm.get_rank(), int(self.fed_draws)])
        generator = torch.Generator(device=gt_classes.device)
        generator.manual_seed(int(seed.generate_state(1)[0]))
        self.fed_draws += 1
        if len(present) >= num_fed:
            return present
        prob = torch.zeros(C + 1, device=gt_classes.device)
        prob[:C] = self.fed_loss_cls_weights
        prob[present] = 0
        negatives = torch.multinomial(prob, num_fed - len(present), False, generator=generator)
        return torch.cat([present, negatives])

    def losses(self, logits, gt_classes):
        C = self.num_classes
        if logits.shape[0] == 0:
            return {"loss_cls": logits.sum() * 0.0}
        mask = logits.new_zeros(C + 1)
        mask[self.fed_classes(gt_classes)] = 1
        # All C + 1 logits with weight 0 on the unused last one: its gradient is then zero
        # without a slice's backward scattering (R, C) into (R, C + 1).
        mask[C] = 0
        positions = positive_positions(gt_classes, C)
        return {"loss_cls": sigmoid_bce(logits, positions, mask[None, :])}

    def scores(self, logits):
        return sigmoid_scores(logits[:, : self.num_classes])
