// The engine's public surface includes the store types its callers hand around.
@_exported import Store
@_exported import SoftDirty
@_exported import Tracee
