"""The napari plugin: dock widgets (thin forms over the compute core, run in a worker thread with
progress and cancel) and sample data. The only part of the package that imports napari or Qt."""
