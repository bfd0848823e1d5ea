"""Layer drop: the teacher-free truncation baseline, registered as ``layer-drop`` (no recipe keys of its own)."""

from compress.methods.registry import register_method

register_method("layer-drop", "compress.methods.layer_drop.method:LayerDropMethod")
