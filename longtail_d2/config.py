"""Config keys of longtail_d2: call :func:`add_longtail_config` on ``get_cfg()`` before merging
YAML files or command-line overrides, so that misspelled keys stay errors."""

from detectron2.config import CfgNode as CN

__all__ = ["add_longtail_config"]


def add_dataset_config(cfg):
    # Datasets in LVIS or COCO json format registered before any loader is built, as a list of
    # (name, json_file, image_root) triples; relative paths are taken under $DETECTRON2_DATASETS
    # (default "datasets"), like detectron2's builtin ones. Their names go in DATASETS.TRAIN/TEST.
    cfg.DATASETS.CUSTOM = []
    # Seed of the training data (the sampler's order and each sample's augmentation): -1 = SEED.
    # >= 0 varies the data apart from SEED, which keeps the initial weights and the RNG of the
    # model (proposal sampling): to tell which of the two a seed-to-seed spread comes from.
    cfg.DATALOADER.SEED = -1
    cfg.DATASETS.SYNTHETIC = CN()
    # Folder (under $DETECTRON2_DATASETS when relative) of the generated long-tailed dataset;
    # "" = none. When set and absent it is generated before training (deterministic by SEED).
    cfg.DATASETS.SYNTHETIC.ROOT = ""
    # Seed of the generator: the same seed and sizes give byte-identical images and json.
    cfg.DATASETS.SYNTHETIC.SEED = 0
    # Number of categories (at most 70: 7 shapes x 10 colours), split into r / c / f groups.
    cfg.DATASETS.SYNTHETIC.NUM_CLASSES = 30
    # Training images before empty ones are dropped.
    cfg.DATASETS.SYNTHETIC.NUM_TRAIN_IMAGES = 1500
    # Fraction of them that hold the most frequent class; the counts fall geometrically to 2 at
    # the last class. An image holds at most 3 classes, so many classes need a smaller fraction
    # (about fraction x NUM_CLASSES <= 3 ln(fraction x NUM_TRAIN_IMAGES / 2)).
    cfg.DATASETS.SYNTHETIC.HEAD_IMAGE_FRACTION = 0.4
    # Validation images; every class appears in at least MIN_VAL_IMAGES_PER_CLASS of them.
    cfg.DATASETS.SYNTHETIC.NUM_VAL_IMAGES = 150
    cfg.DATASETS.SYNTHETIC.MIN_VAL_IMAGES_PER_CLASS = 3
    # Held-out test images ("longtail_synth_test"), drawn like the validation ones (each class in
    # at least MIN_VAL_IMAGES_PER_CLASS); 0 = no test split. Tune on val, report test.
    cfg.DATASETS.SYNTHETIC.NUM_TEST_IMAGES = 0
    # Side of the square images in pixels.
    cfg.DATASETS.SYNTHETIC.IMAGE_SIZE = 128


def add_evaluation_config(cfg):
    # Detections kept per image by the LVIS protocol (lvis-api's max_dets), best scores first.
    cfg.TEST.LVIS_MAX_DETS_PER_IMAGE = 300
    # Evaluation protocol: "lvis" (federated: neg / not-exhaustive ids), "coco" (pycocotools'
    # exhaustive protocol, plus AP by frequency group), "both", or "" = by the test set: "lvis"
    # if its images carry neg_category_ids / not_exhaustive_category_ids, else "coco".
    cfg.TEST.EVALUATOR = ""
    # > 0: also report AP-fixed and AP-pool (Dave et al. 2021) with this budget K of detections
    # per category over the dataset and no per-image cap (LVIS: 10000); 0 = off.
    cfg.TEST.DETS_PER_CATEGORY = 0
    # Training image counts that bound the frequency groups: rare <= first, common <= second,
    # frequent above (LVIS: 10, 100). Used where groups are derived from image counts.
    cfg.DATASETS.FREQUENCY_GROUP_THRESHOLDS = (10, 100)


def add_loss_config(cfg):
    head = cfg.MODEL.ROI_BOX_HEAD
    # Classification loss of LongTailROIHeads / LongTailCascadeROIHeads, a LONGTAIL_LOSS_REGISTRY
    # name: SoftmaxCELoss, SigmoidCELoss, EQLLoss, DropLoss, EQLv2Loss, SeesawLoss,
    # BalancedSigmoidLoss (alias BalancedSoftmaxLoss), FederatedLoss (which uses detectron2's
    # FED_LOSS_NUM_CLASSES / FED_LOSS_FREQ_WEIGHT_POWER).
    head.CLS_LOSS = "SoftmaxCELoss"
    # pi of the classifier bias init -log((1 - pi) / pi) of the sigmoid losses (EQL: 0.001).
    head.PRIOR_PROB = 0.001
    # FederatedLoss's draw of F: -1 with torch's global generator (detectron2); >= 0 from a
    # stream of its own seeded with this, the rank and the draw number: the same sequence of F
    # whatever SEED is (to tell F's draw from the rest of a run's randomness).
    head.FED_LOSS_DRAW_SEED = -1


def add_eql_config(cfg):
    head = cfg.MODEL.ROI_BOX_HEAD
    head.TAIL = CN()
    # Tail set T of EQL and DropLoss: the classes of these frequency groups ...
    head.TAIL.GROUPS = ["r", "c"]
    # ... or, when > 0, the classes of image frequency f(c) < LAMBDA (the papers' lambda;
    # 0.00177 = r + c on LVIS v0.5 only).
    head.TAIL.LAMBDA = 0.0


def add_eqlv2_config(cfg):
    head = cfg.MODEL.ROI_BOX_HEAD
    head.EQLV2 = CN()
    # gamma of the mapping f(g) = 1 / (1 + exp(-gamma (g - mu))) of the gradient ratio g.
    head.EQLV2.GAMMA = 12.0
    # mu of the same mapping.
    head.EQLV2.MU = 0.8
    # alpha of the positive weight 1 + alpha (1 - f(g)).
    head.EQLV2.ALPHA = 4.0


def add_seesaw_config(cfg):
    head = cfg.MODEL.ROI_BOX_HEAD
    head.SEESAW = CN()
    # p, the mitigation exponent: M_ij = (N_j / N_i)^p.
    head.SEESAW.P = 0.8
    # q, the compensation exponent: C_ij = (s_j / s_i)^q.
    head.SEESAW.Q = 2.0
    # eps, the clamp of the true-class score in C_ij.
    head.SEESAW.EPS = 0.01
    head.NORMED_CLASSIFIER = CN()
    # Seesaw's cosine classifier (all logits = tau * cos + b), usable with any loss.
    head.NORMED_CLASSIFIER.ENABLED = False
    # tau of the cosine classifier.
    head.NORMED_CLASSIFIER.TEMPERATURE = 20.0
    # tau of the normalised 1x1 mask predictor (ROI_MASK_HEAD.NAME NormedMaskRCNNConvUpsampleHead).
    cfg.MODEL.ROI_MASK_HEAD.NORMED_TEMPERATURE = 20.0


# PCB's keys before they were named for what they count (passes of the box head, not iterations).
PCB_RENAMED_KEYS = {
    "MODEL.ROI_BOX_HEAD.PCB.NUM_ITERS": "MODEL.ROI_BOX_HEAD.PCB.NUM_PASSES",
    "MODEL.ROI_BOX_HEAD.PCB.ITER_LOSS_WEIGHTS": "MODEL.ROI_BOX_HEAD.PCB.PASS_LOSS_WEIGHTS",
    "MODEL.ROI_BOX_HEAD.PCB.REG_ITER": "MODEL.ROI_BOX_HEAD.PCB.REG_PASS",
}


def add_pcb_config(cfg):
    # PCB (Pairwise Class Balance) with ROI_HEADS.NAME PCBROIHeads, on SoftmaxCELoss, SeesawLoss
    # or EQLv2Loss (or their subclasses).
    pcb = cfg.MODEL.ROI_BOX_HEAD.PCB = CN()
    # m, momentum of the confusion-matrix EMA.
    pcb.MOMENTUM = 0.99
    # alpha of the soft targets at the last pass (paper: 0.4 softmax, 0.05 Seesaw, 0.2 EQL v2).
    pcb.ALPHA = 0.4
    # Iteration from which PCB acts; -1 = SOLVER.STEPS[0], i.e. after the first LR decay.
    pcb.START_ITER = -1
    # T, passes of the shared box head (the iterative head).
    pcb.NUM_PASSES = 3
    # lambda_t, weight of the classification loss of each of the T passes.
    pcb.PASS_LOSS_WEIGHTS = [0.2, 0.2, 0.6]
    # The pass (0-based) whose box regression is trained.
    pcb.REG_PASS = 2
    # Hidden width of the two modulation MLPs.
    pcb.MLP_HIDDEN = 512
    # LayerNorm on the logits entering the channel MLP (the reference's use_layer_norm: on in
    # its EQL v2 + PCB configs, off for softmax and Seesaw).
    pcb.USE_LAYER_NORM = False
    # Update the confusion matrix at every pass of the iterative head (the reference: T updates
    # per step, EMA time constant ~1/(T(1-m)) steps) instead of once per step at the last pass.
    pcb.UPDATE_PER_PASS = False
    # Old names are rejected with a message that gives the new one (yacs' renamed keys).
    for old, new in PCB_RENAMED_KEYS.items():
        if not cfg.key_is_renamed(old):
            cfg.register_renamed_key(old, new)


def add_fasa_config(cfg):
    # FASA with ROI_HEADS.NAME FASAROIHeads (SoftmaxCELoss).
    fasa = cfg.MODEL.ROI_BOX_HEAD.FASA = CN()
    # Weight of the batch in the EMA of the class-wise feature mean and variance.
    fasa.MOMENTUM = 0.1
    # Weight of the virtual features' classification loss.
    fasa.AUG_LOSS_WEIGHT = 0.1
    # Initial probabilities PROB_SCALE * ((1/n_c) / sum_k 1/n_k)^PROB_POWER: the power ...
    fasa.PROB_POWER = 1.0
    # ... and the scale.
    fasa.PROB_SCALE = 1.0
    # Virtual features from this iteration on; -1: after one epoch.
    fasa.START_ITER = -1
    # Adaptation every ADAPT_PERIOD iterations; -1: one epoch.
    fasa.ADAPT_PERIOD = -1
    # A class group's probabilities are multiplied by ADAPT_UP when its held-out loss fell ...
    fasa.ADAPT_UP = 1.1
    # ... and by ADAPT_DOWN when it rose.
    fasa.ADAPT_DOWN = 0.9
    # Held-out images of the adaptation: this dataset if set ...
    fasa.ADAPT_DATASET = ""
    # ... else this fraction of DATASETS.TRAIN (removed from training). Never the evaluation set.
    fasa.HELD_OUT_FRACTION = 0.05


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
    # Loss of the virtually stepped classifier on the meta batch: "balanced" (the reference's
    # shifted Balanced Sigmoid loss, not re-weighted) or "plain" (sigmoid BCE of raw logits).
    cfg.META_REWEIGHT.META_OBJECTIVE = "balanced"


def add_validation_config(cfg):
    # Open every image of the datasets a run reads before it starts (in parallel, cached by file
    # size and mtime) and compare its size with the annotation file's; False skips it (huge sets).
    cfg.DATALOADER.CHECK_IMAGES = True
    # --eval-only refuses a checkpoint that lacks a parameter of the model or has it in another
    # shape (it would be evaluated at its random initialisation); True allows it.
    cfg.TEST.ALLOW_PARTIAL_WEIGHTS = False
    # Training refuses an OUTPUT_DIR holding a finished run (model_final.pth) or an unfinished
    # one (last_checkpoint, model_*.pth) unless --resume; True overwrites it instead.
    cfg.OUTPUT_DIR_OVERWRITE = False


def add_longtail_config(cfg):
    """Add every longtail_d2 key, with its default, to a detectron2 config (in place)."""
    add_validation_config(cfg)
    add_dataset_config(cfg)
    add_evaluation_config(cfg)
    add_loss_config(cfg)
    add_eql_config(cfg)
    add_eqlv2_config(cfg)
    add_seesaw_config(cfg)
    add_pcb_config(cfg)
    add_fasa_config(cfg)
    add_decoupled_config(cfg)
    add_meta_reweight_config(cfg)
    return cfg
