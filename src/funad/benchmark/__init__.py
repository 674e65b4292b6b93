"""`funad benchmark`: the contaminated-data protocol, FUN-AD and its baselines on one split and one feature cache,
over one dataset or several summarised side by side."""
