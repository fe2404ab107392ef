"""Config keys of longtail_d2: call :func:`add_longtail_config` on ``get_cfg()`` before merging
YAML files or command-line overrides, so that misspelled keys stay errors."""

from detectron2.config import CfgNode as CN

__all__ = ["add_longtail_config"]


def add_dataset_config(cfg):
    # Datasets in LVIS or COCO json format registered before any loader is built, as a list of
    # (name, json_file, image_root) triples; relative paths are taken under $DETECTRON2_DATASETS
    # (default "datasets"), like detectron2's builtin ones. Their names go in DATASETS.TRAIN/TEST.
    cfg.DATASETS.CUSTOM = []
    cfg.DATASETS.SYNTHETIC = CN()
    # Folder (under $DETECTRON2_DATASETS when relative) of the generated long-tailed dataset;
    # "" = none. When set and absent it is generated before training (deterministic by SEED).
    cfg.DATASETS.SYNTHETIC.ROOT = ""
    # Seed of the generator: the same seed and sizes give byte-identical images and json.
    cfg.DATASETS.SYNTHETIC.SEED = 0
    # Number of categories (at most 42: 7 shapes x 6 colours), split into r / c / f groups.
    cfg.DATASETS.SYNTHETIC.NUM_CLASSES = 30
    # Training images before empty ones are dropped; the most frequent class is in ~40% of them.
    cfg.DATASETS.SYNTHETIC.NUM_TRAIN_IMAGES = 1500
    # Validation images; every class appears in at least MIN_VAL_IMAGES_PER_CLASS of them.
    cfg.DATASETS.SYNTHETIC.NUM_VAL_IMAGES = 150
    cfg.DATASETS.SYNTHETIC.MIN_VAL_IMAGES_PER_CLASS = 3
    # Side of the square images in pixels.
    cfg.DATASETS.SYNTHETIC.IMAGE_SIZE = 128


def add_evaluation_config(cfg):
    # Detections kept per image by the LVIS protocol (lvis-api's max_dets), best scores first.
    cfg.TEST.LVIS_MAX_DETS_PER_IMAGE = 300


def add_box_head_config(cfg):
    head = cfg.MODEL.ROI_BOX_HEAD
    # Classification loss of LongTailROIHeads / LongTailCascadeROIHeads, a LONGTAIL_LOSS_REGISTRY
    # name: SoftmaxCELoss, SigmoidCELoss, EQLLoss, DropLoss, EQLv2Loss, SeesawLoss,
    # BalancedSoftmaxLoss, FederatedLoss (which uses FED_LOSS_NUM_CLASSES / _FREQ_WEIGHT_POWER).
    head.CLS_LOSS = "SoftmaxCELoss"
    # pi of the classifier bias init -log((1 - pi) / pi) of the sigmoid losses (EQL: 0.001).
    head.PRIOR_PROB = 0.001
    # Tail set T of EQL and DropLoss: the classes of these frequency groups ...
    head.TAIL = CN()
    head.TAIL.GROUPS = ["r", "c"]
    # ... or, when > 0, the classes of image frequency f(c) < LAMBDA (the papers' lambda;
    # 0.00177 = r + c on LVIS v0.5 only).
    head.TAIL.LAMBDA = 0.0
    # EQL v2: gamma, mu of the mapping f(g) = 1 / (1 + exp(-gamma (g - mu))), alpha of the
    # positive weight 1 + alpha (1 - f(g)).
    head.EQLV2 = CN()
    head.EQLV2.GAMMA = 12.0
    head.EQLV2.MU = 0.8
    head.EQLV2.ALPHA = 4.0
    # Seesaw: p (mitigation exponent), q (compensation exponent), eps (score clamp).
    head.SEESAW = CN()
    head.SEESAW.P = 0.8
    head.SEESAW.Q = 2.0
    head.SEESAW.EPS = 0.01
    # Cosine classifier of Seesaw (all logits = tau * cos + b), usable with any loss.
    head.NORMED_CLASSIFIER = CN()
    head.NORMED_CLASSIFIER.ENABLED = False
    head.NORMED_CLASSIFIER.TEMPERATURE = 20.0
    # PCB (Pairwise Class Balance) with ROI_HEADS.NAME PCBROIHeads, on SoftmaxCELoss, SeesawLoss
    # or EQLv2Loss: momentum m of the confusion-matrix EMA, alpha of the soft targets (paper:
    # 0.4 softmax, 0.05 Seesaw, 0.2 EQL v2), START_ITER (-1 = SOLVER.STEPS[0], i.e. after the
    # first LR decay), NUM_ITERS passes T of the box head with classification-loss weights
    # ITER_LOSS_WEIGHTS, box regression from pass REG_ITER, MLP_HIDDEN of the modulation MLPs.
    head.PCB = CN()
    head.PCB.MOMENTUM = 0.99
    head.PCB.ALPHA = 0.4
    head.PCB.START_ITER = -1
    head.PCB.NUM_ITERS = 3
    head.PCB.ITER_LOSS_WEIGHTS = [0.2, 0.2, 0.6]
    head.PCB.REG_ITER = 2
    head.PCB.MLP_HIDDEN = 512
    # FASA with ROI_HEADS.NAME FASAROIHeads (SoftmaxCELoss): MOMENTUM = weight of the batch in
    # the EMA of the class-wise feature mean and variance; AUG_LOSS_WEIGHT of the virtual
    # features' loss; initial probabilities PROB_SCALE * ((1/n_c) / sum 1/n_k)^PROB_POWER;
    # virtual features from START_ITER (-1: after one epoch); every ADAPT_PERIOD iterations
    # (-1: one epoch) the held-out loss of each class group multiplies its probabilities by
    # ADAPT_UP (fell) or ADAPT_DOWN (rose). Held out: ADAPT_DATASET if set, else the fraction
    # HELD_OUT_FRACTION of DATASETS.TRAIN (removed from training). Never the evaluation set.
    head.FASA = CN()
    head.FASA.MOMENTUM = 0.1
    head.FASA.AUG_LOSS_WEIGHT = 0.1
    head.FASA.PROB_POWER = 1.0
    head.FASA.PROB_SCALE = 1.0
    head.FASA.START_ITER = -1
    head.FASA.ADAPT_PERIOD = -1
    head.FASA.ADAPT_UP = 1.1
    head.FASA.ADAPT_DOWN = 0.9
    head.FASA.ADAPT_DATASET = ""
    head.FASA.HELD_OUT_FRACTION = 0.05
    # tau of the normalised 1x1 mask predictor (ROI_MASK_HEAD.NAME NormedMaskRCNNConvUpsampleHead).
    cfg.MODEL.ROI_MASK_HEAD.NORMED_TEMPERATURE = 20.0


def add_decoupled_config(cfg):
    # Decoupled training (Kang et al. 2020; BALMS stage 2): load a trained detector and train
    # only the parameters whose names contain one of TRAINABLE; every other parameter is frozen
    # and frozen BatchNorm layers use their running statistics (test-time behaviour).
    cfg.MODEL.DECOUPLE = CN()
    cfg.MODEL.DECOUPLE.ENABLED = False
    cfg.MODEL.DECOUPLE.TRAINABLE = ["roi_heads.box_predictor.cls_score"]


def add_meta_reweight_config(cfg):
    # BALMS meta re-weighting (Ren et al. 2020) in decoupled stage 2: per-class weights
    # w = sigmoid(theta) of the Balanced Softmax loss, learnt through a virtual SGD step so that
    # the loss on class-balanced meta batches falls. Needs MODEL.DECOUPLE on cls_score only.
    cfg.META_REWEIGHT = CN()
    cfg.META_REWEIGHT.ENABLED = False
    # Adam learning rate of theta.
    cfg.META_REWEIGHT.LR = 0.01
    # Initial class weight sigmoid(theta_0).
    cfg.META_REWEIGHT.INIT_WEIGHT = 0.5
    # Images per meta batch over all workers, drawn by the class-balanced sampler
    # (image repeat factor max over its classes of 1 / f(c)).
    cfg.META_REWEIGHT.IMS_PER_BATCH = 16


def add_longtail_config(cfg):
    """Add every longtail_d2 key, with its default, to a detectron2 config (in place)."""
    add_dataset_config(cfg)
    add_evaluation_config(cfg)
    add_box_head_config(cfg)
    add_decoupled_config(cfg)
    add_meta_reweight_config(cfg)
    return cfg
