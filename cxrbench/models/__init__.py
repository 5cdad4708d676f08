"""Network pieces shared by the methods (backbones from timm, heads written here)."""
