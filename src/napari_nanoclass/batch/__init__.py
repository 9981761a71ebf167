"""Batch processing: any registered analysis over folders of images, resumable, in this process or
on a dask cluster (:mod:`.runner`)."""
