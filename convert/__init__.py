"""Conversion to TFLite (int8 and float twins), evaluation and float-versus-int8 comparison."""
