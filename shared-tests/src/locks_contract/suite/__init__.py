"""The cases of the contract, one mixin per concern (no ``Test`` prefix: never collected alone)."""
