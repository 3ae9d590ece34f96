"""The names of TensorRT's own plugins (libnvinfer_plugin), which a generated plugin must not take.

A library registering a creator under a name TensorRT already registers makes IPluginRegistry::loadLibrary fail
("already registered") or, worse, shadows the built-in plugin for every model in the process. The names are the
creator names registered by NVIDIA/TensorRT `plugin/` (checked at tags v10.9.0 and v11.1; plugins removed since
10.x kept, since an engine may still be loaded next to an older libnvinfer_plugin). Data only: easy to move.
"""

from __future__ import annotations

TRT_BUILTIN_PLUGIN_NAMES: frozenset[str] = frozenset(
    {
        "BatchTilePlugin_TRT",
        "BatchedNMSDynamic_TRT",
        "BatchedNMS_TRT",
        "Clip_TRT",
        "CoordConvAC",
        "CropAndResize",
        "CropAndResizeDynamic",
        "CustomEmbLayerNormPluginDynamic",
        "CustomFCPluginDynamic",
        "CustomGeluPluginDynamic",
        "CustomQKVToContextPluginDynamic",
        "CustomSkipLayerNormPluginDynamic",
        "DecodeBbox3DPlugin",
        "DetectionLayer_TRT",
        "DisentangledAttention_TRT",
        "EfficientNMS_Explicit_TF_TRT",
        "EfficientNMS_Implicit_TF_TRT",
        "EfficientNMS_ONNX_TRT",
        "EfficientNMS_TRT",
        "FlattenConcat_TRT",
        "GenerateDetection_TRT",
        "GridAnchorRect_TRT",
        "GridAnchor_TRT",
        "GroupNormalizationPlugin",
        "InstanceNormalization_TRT",
        "LReLU_TRT",
        "ModulatedDeformConv2d",
        "MultilevelCropAndResize_TRT",
        "MultilevelProposeROI_TRT",
        "MultiscaleDeformableAttnPlugin_TRT",
        "NMSDynamic_TRT",
        "NMS_TRT",
        "Normalize_TRT",
        "PillarScatterPlugin",
        "PriorBox_TRT",
        "ProposalDynamic",
        "ProposalLayer_TRT",
        "PyramidROIAlign_TRT",
        "ROIAlign_TRT",
        "RPROI_TRT",
        "Region_TRT",
        "Reorg_TRT",
        "ResizeNearest_TRT",
        "ScatterElements",
        "ScatterND",
        "SpecialSlice_TRT",
        "Split",
        "VoxelGeneratorPlugin",
    }
)


def is_trt_builtin_plugin(name: str) -> bool:
    """Is `name` a plugin TensorRT itself registers? Any name ending in "_TRT" counts: that suffix is TensorRT's."""
    return name in TRT_BUILTIN_PLUGIN_NAMES or name.endswith("_TRT")
