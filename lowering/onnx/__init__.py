"""The ONNX border: only ``importer`` and ``exporter`` import the onnx package."""
