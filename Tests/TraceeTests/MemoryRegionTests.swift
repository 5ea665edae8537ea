import Testing
import Tracee
