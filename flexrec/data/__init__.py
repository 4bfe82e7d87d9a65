"""flexrec.data: loaders, tasks and the DataModule."""
