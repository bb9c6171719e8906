"""``keras.applications``: the classic ImageNet architectures with Keras's names, arguments, layer names and
parameter counts (``weights=None``; ImageNet weights load from a file you place, see _common.py).

    from lamina import applications
    model = applications.ResNet50(weights=None)          # 25,636,712 parameters, as Keras's
"""
from . import densenet, mobilenet, mobilenet_v2, resnet, vgg
from . import resnet as resnet50, resnet as resnet_v2, vgg as vgg16, vgg as vgg19  # Keras's module paths
from .densenet import DenseNet121, DenseNet169, DenseNet201
from .mobilenet import MobileNet
from .mobilenet_v2 import MobileNetV2
from .resnet import ResNet50, ResNet50V2, ResNet101, ResNet101V2, ResNet152, ResNet152V2
from .vgg import VGG16, VGG19
from . import efficientnet, efficientnet_v2, mobilenet_v3
from .efficientnet import (EfficientNetB0, EfficientNetB1, EfficientNetB2, EfficientNetB3, EfficientNetB4,
                           EfficientNetB5, EfficientNetB6, EfficientNetB7)
from .efficientnet_v2 import (EfficientNetV2B0, EfficientNetV2B1, EfficientNetV2B2, EfficientNetV2B3,
                              EfficientNetV2L, EfficientNetV2M, EfficientNetV2S)
from .mobilenet_v3 import MobileNetV3Large, MobileNetV3Small
from . import inception_resnet_v2, inception_v3, xception; from .inception_resnet_v2 import InceptionResNetV2; from .inception_v3 import InceptionV3; from .xception import Xception  # noqa: E702,E501
from . import nasnet; from .nasnet import NASNetLarge, NASNetMobile  # noqa: E702
from . import imagenet_utils  # noqa: F401  (keras.applications.imagenet_utils)
from . import convnext; from .convnext import ConvNeXtBase, ConvNeXtLarge, ConvNeXtSmall, ConvNeXtTiny, ConvNeXtXLarge  # noqa: E702

__all__ = ["ResNet50", "ResNet101", "ResNet152", "ResNet50V2", "ResNet101V2", "ResNet152V2", "VGG16", "VGG19",
           "DenseNet121", "DenseNet169", "DenseNet201", "MobileNet", "MobileNetV2", "densenet", "mobilenet",
           "mobilenet_v2", "resnet", "resnet50", "resnet_v2", "vgg", "vgg16",
           "vgg19"] + ["efficientnet", "efficientnet_v2", "mobilenet_v3", "MobileNetV3Small", "MobileNetV3Large"] + [
    n for n in efficientnet.__all__ + efficientnet_v2.__all__ if n[0].isupper()] + [
    "Xception", "xception", "InceptionV3", "inception_v3", "InceptionResNetV2", "inception_resnet_v2", "ConvNeXtTiny",
    "ConvNeXtSmall", "ConvNeXtBase", "ConvNeXtLarge", "ConvNeXtXLarge", "convnext", "NASNetMobile", "NASNetLarge",
    "nasnet", "imagenet_utils"]
