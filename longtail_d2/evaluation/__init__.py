from .lvis_eval import LVIS_METRICS, evaluate_lvis
from .lvis_evaluator import LongTailLVISEvaluator
