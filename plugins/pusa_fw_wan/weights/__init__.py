"""Reading and writing weight files (safetensors, .pth/.pt/.bin, sharded indexes) without pickle."""
