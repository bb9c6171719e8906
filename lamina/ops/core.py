"""The functions of ``keras.ops`` outside its numpy/nn/linalg/image namespaces: conversion and dtypes,
control flow, segment and scatter ops, top_k, FFT and STFT, special functions."""
__all__ = []
