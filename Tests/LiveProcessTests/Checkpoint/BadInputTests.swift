import Foundation
import TestTools
import Testing

extension LiveProcess {
    /// Bad input gets one clear line and a non-zero exit, at once.
    @Suite struct BadInputTests {
        @Test func anIntervalThatIsNotAFiniteNumberOfSecondsUpToAYearIsRefused() throws {
            for value in ["inf", "1e300", "nan", "0", "31622401"] {
                for arguments in [["--interval", value, "1"], ["track", "--interval", value, "1"]] {
                    let run = try TestTools.run("cpx", arguments)
                    #expect(run.status == 64, "cpx \(arguments): \(run.errors)")
                    #expect(
                        run.errors.contains("--interval takes seconds, more than 0 and at most 31622400"),
                        "\(run.errors)")
                }
            }
        }

        @Test(.timeLimit(.minutes(1))) func aProcessCannotCheckpointItselfOrAnAncestor() throws {
            let store = try RestartTests.scratch("self") + "/store"
            defer { try? FileManager.default.removeItem(atPath: (store as NSString).deletingLastPathComponent) }
            let cpx = TestTools.path("cpx")
            // `exec`: cpx runs as the shell's pid, $$.
            let itself = try TestTools.run("/bin/sh", ["-c", "exec \"$0\" --store \"$1\" $$", cpx, store])
            #expect(itself.status == 1, "\(itself.output) \(itself.errors)")
            #expect(itself.errors.contains("it is this process itself"), "\(itself.errors)")
            // Without: the shell waits for cpx, which must not stop it.
            let parent = try TestTools.run("/bin/sh", ["-c", "\"$0\" --store \"$1\" $$; echo went on", cpx, store])
            #expect(parent.errors.contains("it is an ancestor of this process"), "\(parent.errors)")
            #expect(parent.output.contains("went on"))
            let track = try TestTools.run("/bin/sh", ["-c", "\"$0\" track --count 1 $$", cpx])
            #expect(track.status != 0)
            #expect(track.errors.contains("it is an ancestor of this process"), "\(track.errors)")
        }
    }
}
