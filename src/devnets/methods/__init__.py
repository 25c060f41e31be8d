"""The two methods on tensors, without Lightning: one class per paper, and the weights they act on."""
