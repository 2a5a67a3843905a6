"""engine: the training side — data, models, masks, methods, analyses, store."""
