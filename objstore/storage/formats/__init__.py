"""Parsers of the tensor file formats segmentation knows, one module per format."""
