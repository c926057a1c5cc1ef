"""The XMed vision-language model package.

Importing it registers ``xmed_vlm`` with ``AutoConfig``, ``AutoModelForImageTextToText`` and
``AutoModelForCausalLM`` so ``from_pretrained(dir)`` works through the Auto classes.

* :mod:`model.vlm.configuration`: ``XMedVisionConfig``, ``XMedVLMConfig``
* :mod:`model.vlm.modeling`: the model, ``build_tiny_vlm``, ``init_coordinate_embeddings``,
  ``freeze``, ``trainable_parameter_names``, ``count_parameters``
* :mod:`model.vlm.processor`: ``XMedProcessor`` (chat prompts, labels, placeholders, images)
* :mod:`model.vlm.audio`: ``load_log_mel``, ``tiny_whisper_config``, ``AudioProjector``
"""

from model.vlm.audio import AudioProjector, load_log_mel, tiny_whisper_config
from model.vlm.configuration import XMedVisionConfig, XMedVLMConfig
from model.vlm.modeling import (
    XMedVLMForConditionalGeneration,
    build_tiny_vlm,
    build_tiny_vlm_for_tokenizer,
    count_parameters,
    freeze,
    init_coordinate_embeddings,
    read_architecture,
    trainable_parameter_names,
)
from model.vlm.processor import SequenceTooLongError, XMedProcessor

__all__ = [
    "AudioProjector",
    "SequenceTooLongError",
    "XMedProcessor",
    "XMedVLMConfig",
    "XMedVLMForConditionalGeneration",
    "XMedVisionConfig",
    "build_tiny_vlm",
    "build_tiny_vlm_for_tokenizer",
    "count_parameters",
    "freeze",
    "init_coordinate_embeddings",
    "load_log_mel",
    "read_architecture",
    "tiny_whisper_config",
    "trainable_parameter_names",
]
