"""Runtime plumbing shared by every model: device and dtype policy, offload and block swap, the interrupt hook,
error advice, finite checks, atomic files, profiling and sequence parallelism. Nothing here knows a model's math."""
