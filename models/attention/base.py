"""What a network asks of an attention layer: where a block keeps it, and whether it ends the block."""

from torch import nn

__all__ = ["ChannelAttention"]


class ChannelAttention(nn.Module):
    """An attention layer that rescales a feature map; ``forward(x)`` returns the rescaled map.

    ``block_attribute`` is the name a residual block stores it under, so that state_dict keys
    read as the checkpoints of its family do (``layer1.0.eca.conv.weight``,
    ``layer1.0.se.fc1.weight``). A layer with ``fuses_residual`` also computes a residual
    block's whole ending, ``relu(attention(x) + identity)``, when called as
    ``layer(x, identity, overwrite_identity)`` (ECA's in-place fast path, which may write over
    either input); blocks then call that form instead of the three steps. The flag is a
    TorchScript constant, so a scripted block compiles only the branch its layer takes, and
    both forms are module calls, so FLOP counters' hooks see them.
    """

    __constants__ = ["fuses_residual"]
    block_attribute = "attention"
    fuses_residual = False
