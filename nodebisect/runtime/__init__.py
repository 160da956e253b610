"""The onnxruntime side: the run's handle, sessions (in a child process or here), prefix sub-models,
weights written once, answers kept, crashes, fusions."""
