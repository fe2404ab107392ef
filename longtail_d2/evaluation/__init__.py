from .coco_eval import evaluate_coco
from .detections import Detections, PredictionWriter, load_results_json, write_results_json
from .fixed_ap import evaluate_ap_pool
from .lvis_eval import LVIS_METRICS, evaluate_lvis
from .lvis_evaluator import LongTailEvaluator, LongTailLVISEvaluator, build_longtail_evaluator
from .protocols import EvalGroundTruth, evaluate_detections
