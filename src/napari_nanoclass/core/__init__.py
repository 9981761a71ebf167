"""The foundation every layer above stands on, free of torch models and of napari: progress and
cancellation (:mod:`.progress`), atomic writes (:mod:`.atomic`), devices and threads
(:mod:`.devices`), augmentation (:mod:`.augment`), metrics (:mod:`.metrics`) and the description
of an analysis with the loop that runs one over files (:mod:`.analysis`)."""
