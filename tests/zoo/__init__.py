"""The test model zoo: small torch models (``models``), their ONNX export (``export``) and a session cache."""
