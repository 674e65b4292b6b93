"""Keys of the metadata `funad export` writes into an ONNX model: torch-free, for the runtime that reads them."""

#: The label-free image threshold the graph's ``label`` output applies.
THRESHOLD_KEY = "threshold"
#: The threshold that outlines defect regions in an anomalous image's map.
PIXEL_THRESHOLD_KEY = "pixel_threshold"
