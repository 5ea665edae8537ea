import SoftDirty
import Testing
