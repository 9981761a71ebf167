"""Networks (:mod:`.unet`) and the model registry (:mod:`.registry`)."""

from napari_nanoclass.models.registry import LoadedModel, ModelError, ModelInfo, list_models, load_model, save_model

__all__ = ["LoadedModel", "ModelError", "ModelInfo", "list_models", "load_model", "save_model"]
