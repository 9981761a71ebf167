"""Reading and writing images (:mod:`.images`: one way for every analysis, the CLI and the
widgets) and opening saved results as napari layers (:mod:`.reader`)."""
