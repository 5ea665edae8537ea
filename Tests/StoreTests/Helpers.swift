import Foundation
import Store
import StoreTestSupport
import Syscall
import TestTools
