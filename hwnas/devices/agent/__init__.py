"""The device agent: ``hwnas agent serve`` runs on the device (a Raspberry Pi, a Jetson, a phone in
Termux) and times ONNX, TFLite or ExecuTorch models for a client that profiles it through the ``remote`` device.

It imports no torch and nothing of hwnas but the devices package: on the device it needs only
numpy and a runtime (onnxruntime and/or ai-edge-litert). ``server`` holds the HTTP side (tokens,
limits, the model store, one job at a time), ``worker`` the child process that loads and times
models, ``protocol`` what both sides of the wire agree on.
"""
