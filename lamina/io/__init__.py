"""File formats: model files (zip of JSON config + safetensors weights), atomic writes. Knows nothing of models."""
