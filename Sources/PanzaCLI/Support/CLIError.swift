/// A failure of the command line itself, printed as one line.
struct CLIError: Error {
    var message: String
    var exitCode: Int32 = 1
}
