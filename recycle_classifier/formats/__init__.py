"""Model files and the one predictor interface: the registry (`predictor`), fastai exports (`learner`, with
Grad-CAM in `cam`), ONNX files (`onnx_predict`, written by `onnx_export`) and the few-shot and extended formats
(`protomodel`)."""
