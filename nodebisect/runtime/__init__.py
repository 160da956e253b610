"""The onnxruntime side: sessions (here or in a child process), prefix sub-models, crashes, fusions."""
