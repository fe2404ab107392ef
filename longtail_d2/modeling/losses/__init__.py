"""Classification losses: pure functions plus thin modules that keep their statistics."""

from .balanced_softmax import BalancedSigmoidLoss, BalancedSoftmaxLoss, balanced_sigmoid_loss
from .base import ClassificationLoss
from .droploss import DropLoss, drop_loss
from .eql import EQLLoss, eql_loss
from .eqlv2 import EQLv2Loss, eqlv2_loss
from .federated import FederatedLoss
from .registry import LONGTAIL_LOSS_REGISTRY, build_classification_loss
from .seesaw import SeesawLoss, seesaw_loss
from .sigmoid_ce import SigmoidCELoss, sigmoid_ce_loss
from .softmax_ce import SoftmaxCELoss
