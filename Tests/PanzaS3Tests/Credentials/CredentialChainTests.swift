import AsyncHTTPClient
import Foundation
import Logging
import Synchronization
import Testing

@testable import PanzaS3

/// The AWS credential chain, each source against a loopback stand-in of its endpoint (STS, the
/// container endpoint, EC2 instance metadata), and files and processes that are real.
@Suite(.timeLimit(.minutes(2)))
struct CredentialChainTests {
    static let expiration = "2099-01-01T00:00:00Z"

    /// An environment with nothing in it but `extra` and a HOME without AWS files.
    static func environment(_ extra: [String: String], home: TemporaryDirectory) -> [String: String] {
        ["HOME": home.url.path, "AWS_EC2_METADATA_DISABLED": "true"].merging(extra) { $1 }
    }

    static func chain(_ environment: [String: String], profile: String? = nil) throws -> S3CredentialChain {
        try S3CredentialChain(
            profile: profile, region: nil, environment: environment, http: HTTPClient.shared,
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        )
    }

    static func stsAnswer(_ action: String, key: String, expiration: String = Self.expiration) -> String {
        LoopbackHTTPServer.response(
            status: 200,
            body: """
                <\(action)Response><\(action)Result><Credentials><AccessKeyId>\(key)</AccessKeyId>\
                <SecretAccessKey>secret-of-\(key)</SecretAccessKey><SessionToken>token-of-\(key)</SessionToken>\
                <Expiration>\(expiration)</Expiration></Credentials></\(action)Result></\(action)Response>
                """
        )
    }

    @Test("Environment variables come first, with the session token and the region")
    func environmentFirst() async throws {
        let home = try TemporaryDirectory()
        let environment = Self.environment(
            [
                "AWS_ACCESS_KEY_ID": "ENVKEY", "AWS_SECRET_ACCESS_KEY": "envsecret", "AWS_SESSION_TOKEN": "envtoken",
                "AWS_REGION": "eu-west-3",
            ],
            home: home
        )
        let credentials = try await Self.chain(environment).credentials()
        #expect(credentials.accessKeyID == "ENVKEY" && credentials.sessionToken == "envtoken")
        #expect(S3Client.Configuration(bucket: "b", environment: environment).region == "eu-west-3")
        let fromDefault = Self.environment(["AWS_DEFAULT_REGION": "ap-south-1"], home: home)
        #expect(S3Client.Configuration(bucket: "b", environment: fromDefault).region == "ap-south-1")
        #expect(
            S3Client.Configuration(bucket: "b", region: "us-west-2", environment: environment).region == "us-west-2")
    }

    @Test("Nothing set up anywhere: missingCredentials at creation, naming where it looked")
    func nothingAnywhere() throws {
        let home = try TemporaryDirectory()
        let error = try #require(throws: S3Error.self) {
            _ = try S3Client(
                configuration: .init(
                    bucket: "bucket", endpoint: "http://127.0.0.1:1", environment: Self.environment([:], home: home)))
        }
        #expect(error.code == .missingCredentials)
        #expect(error.message.contains("environment variables") && error.message.contains("profile 'default'"))
    }

    @Test("Web identity: the token file goes to STS AssumeRoleWithWebIdentity, re-read at each refresh")
    func webIdentity() async throws {
        let home = try TemporaryDirectory()
        let tokenFile = home.url.path + "/token"
        try "oidc-token-1\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        let sts = try LoopbackHTTPServer { request in
            request.text.contains("Action=AssumeRoleWithWebIdentity")
                && request.text.contains("WebIdentityToken=oidc-token-1")
                && request.text.contains("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fcache")
                && request.text.contains("RoleSessionName=ci-run")
                ? Self.stsAnswer("AssumeRoleWithWebIdentity", key: "ASIAWEB")
                : LoopbackHTTPServer.response(
                    status: 400,
                    body:
                        "<ErrorResponse><Error><Code>InvalidIdentityToken</Code><Message>bad request</Message></Error></ErrorResponse>"
                )
        }
        defer { sts.close() }
        let environment = Self.environment(
            [
                "AWS_WEB_IDENTITY_TOKEN_FILE": tokenFile, "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/cache",
                "AWS_ROLE_SESSION_NAME": "ci-run", "AWS_ENDPOINT_URL_STS": sts.endpoint,
            ],
            home: home
        )
        let credentials = try await Self.chain(environment).credentials()
        #expect(credentials.accessKeyID == "ASIAWEB" && credentials.sessionToken == "token-of-ASIAWEB")
        #expect(credentials.expiration == CredentialJSON.parseDate(Self.expiration))
        #expect(sts.requests.first?.method == "POST")

        try "oidc-token-2".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        let refused = try await #require(throws: S3Error.self) { _ = try await Self.chain(environment).credentials() }
        #expect(refused.s3Code == "InvalidIdentityToken", "the rotated token must be read, and STS's error kept")
    }

    @Test("A profile with role_arn and source_profile assumes the role with the source's keys, signed for STS")
    func assumeRoleFromSourceProfile() async throws {
        let home = try TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: home.url.path + "/.aws", withIntermediateDirectories: true)
        try """
        [base]
        aws_access_key_id = SRCKEY
        aws_secret_access_key = srcsecret
        """.write(toFile: home.url.path + "/.aws/credentials", atomically: true, encoding: .utf8)
        try """
        [profile deploy]
        role_arn = arn:aws:iam::123456789012:role/deploy
        source_profile = base
        external_id = ext-42
        role_session_name = panza-test
        region = eu-central-1
        """.write(toFile: home.url.path + "/.aws/config", atomically: true, encoding: .utf8)
        let sts = try LoopbackHTTPServer { request in
            let authorization = request.headers["authorization"] ?? ""
            let good =
                authorization.contains("Credential=SRCKEY/") && authorization.contains("/eu-central-1/sts/aws4_request")
                && request.text.contains("Action=AssumeRole&") && request.text.contains("ExternalId=ext-42")
            return good
                ? Self.stsAnswer("AssumeRole", key: "ASIAROLE")
                : LoopbackHTTPServer.response(
                    status: 403, body: "<ErrorResponse><Error><Code>AccessDenied</Code></Error></ErrorResponse>")
        }
        defer { sts.close() }
        let environment = Self.environment(["AWS_PROFILE": "deploy", "AWS_ENDPOINT_URL_STS": sts.endpoint], home: home)
        let credentials = try await Self.chain(environment).credentials()
        #expect(credentials.accessKeyID == "ASIAROLE")
        #expect(
            S3Client.Configuration(bucket: "b", environment: environment).region == "eu-central-1",
            "the profile's region")
        // The explicit profile reads only that profile.
        let explicit = try await Self.chain(environment.merging(["AWS_PROFILE": "other"]) { $1 }, profile: "deploy")
            .credentials()
        #expect(explicit.accessKeyID == "ASIAROLE")
    }

    @Test("credential_process runs, its JSON is read, and a failing process is a clear error")
    func credentialProcess() async throws {
        let home = try TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: home.url.path + "/.aws", withIntermediateDirectories: true)
        let script = home.url.path + "/creds.sh"
        try """
        #!/bin/sh
        echo '{"Version": 1, "AccessKeyId": "PROCKEY", "SecretAccessKey": "procsecret", "SessionToken": "proctoken", "Expiration": "2099-01-01T00:00:00.000Z"}'
        """.write(toFile: script, atomically: true, encoding: .utf8)
        try """
        [default]
        credential_process = sh \(script)
        [profile broken]
        credential_process = sh -c 'echo nope >&2; exit 3'
        """.write(toFile: home.url.path + "/.aws/config", atomically: true, encoding: .utf8)
        let credentials = try await Self.chain(Self.environment([:], home: home)).credentials()
        #expect(credentials.accessKeyID == "PROCKEY" && credentials.sessionToken == "proctoken")
        #expect(credentials.expiration != nil)
        let error = try await #require(throws: S3Error.self) {
            _ = try await Self.chain(Self.environment([:], home: home), profile: "broken").credentials()
        }
        #expect(error.code == .missingCredentials && error.message.contains("status 3"))
    }

    @Test("The container endpoint (full URI) is asked with the token of the token file")
    func container() async throws {
        let home = try TemporaryDirectory()
        try "pod-identity-token\n".write(toFile: home.url.path + "/ecs-token", atomically: true, encoding: .utf8)
        let endpoint = try LoopbackHTTPServer { request in
            guard request.headers["authorization"] == "pod-identity-token", request.target == "/v2/credentials/abc"
            else {
                return LoopbackHTTPServer.response(status: 401)
            }
            return LoopbackHTTPServer.response(
                status: 200,
                body:
                    #"{"AccessKeyId":"ASIAECS","SecretAccessKey":"ecssecret","Token":"ecstoken","Expiration":"2099-01-01T00:00:00Z"}"#
            )
        }
        defer { endpoint.close() }
        let environment = Self.environment(
            [
                "AWS_CONTAINER_CREDENTIALS_FULL_URI": endpoint.endpoint + "/v2/credentials/abc",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": home.url.path + "/ecs-token",
            ],
            home: home
        )
        let credentials = try await Self.chain(environment).credentials()
        #expect(credentials.accessKeyID == "ASIAECS" && credentials.sessionToken == "ecstoken")

        let foreign = Self.environment(["AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://example.com/creds"], home: home)
        let refused = try #require(throws: S3Error.self) { _ = try Self.chain(foreign) }
        #expect(refused.code == .invalidConfiguration, "credentials in clear to another host must be refused")
        #expect(ContainerCredentialSource.isAllowed("https://example.com/creds"))
        #expect(ContainerCredentialSource.isAllowed("http://169.254.170.23/v1/credentials"))
    }

    @Test("EC2 instance metadata with IMDSv2: a session token first, then the role, then its credentials")
    func instanceMetadata() async throws {
        let home = try TemporaryDirectory()
        let imds = try LoopbackHTTPServer { request in
            switch (request.method, request.target) {
            case ("PUT", "/latest/api/token"):
                return request.headers["x-aws-ec2-metadata-token-ttl-seconds"] == "21600"
                    ? LoopbackHTTPServer.response(status: 200, body: "imds-session")
                    : LoopbackHTTPServer.response(status: 400)
            case (_, _) where request.headers["x-aws-ec2-metadata-token"] != "imds-session":
                return LoopbackHTTPServer.response(status: 401)
            case ("GET", "/latest/meta-data/iam/security-credentials/"):
                return LoopbackHTTPServer.response(status: 200, body: "cache-role\n")
            case ("GET", "/latest/meta-data/iam/security-credentials/cache-role"):
                return LoopbackHTTPServer.response(
                    status: 200,
                    body:
                        #"{"Code":"Success","AccessKeyId":"ASIAEC2","SecretAccessKey":"ec2secret","Token":"ec2token","Expiration":"2099-01-01T00:00:00Z"}"#
                )
            default:
                return LoopbackHTTPServer.response(status: 404)
            }
        }
        defer { imds.close() }
        var environment = Self.environment(["AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.endpoint + "/"], home: home)
        environment["AWS_EC2_METADATA_DISABLED"] = nil
        let credentials = try await Self.chain(environment).credentials()
        #expect(credentials.accessKeyID == "ASIAEC2" && credentials.sessionToken == "ec2token")
        #expect(imds.requests.map(\.method) == ["PUT", "GET", "GET"])

        // Off EC2: nobody answers, and the chain ends with missingCredentials, not a hang.
        let nobody = try LoopbackHTTPServer.blackhole()
        defer { nobody.close() }
        environment["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = nobody.endpoint
        let started = ContinuousClock.now
        let error = try await #require(throws: S3Error.self) { _ = try await Self.chain(environment).credentials() }
        #expect(error.code == .missingCredentials)
        #expect(ContinuousClock.now - started < .seconds(10), "the metadata probe is bounded (1 s)")
    }

    @Test("An ExpiredToken answer makes the client fetch new credentials and retry once")
    func expiredTokenRefreshes() async throws {
        let provider = SequenceProvider(keys: ["OLDKEY", "NEWKEY"])
        let server = try LoopbackHTTPServer { request in
            (request.headers["authorization"] ?? "").contains("Credential=OLDKEY/")
                ? LoopbackHTTPServer.response(
                    status: 400,
                    body: "<Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message></Error>")
                : LoopbackHTTPServer.response(status: 200, body: "fresh")
        }
        defer { server.close() }
        let client = try S3Client(
            configuration: .init(
                bucket: "bucket", endpoint: server.endpoint, credentialProvider: provider, retry: .none))
        let body = try await client.get(key: "k")
        #expect(body.map { String(decoding: $0, as: UTF8.self) } == "fresh")
        #expect(provider.invalidations == 1)
        #expect(server.requests.count == 2)
        try await client.shutdown()
    }
}

/// Hands out credentials with the next key after each invalidation.
final class SequenceProvider: S3CredentialProvider {
    private let state: Mutex<(keys: [String], index: Int, invalidations: Int)>

    init(keys: [String]) { self.state = Mutex((keys, 0, 0)) }

    var invalidations: Int { self.state.withLock { $0.invalidations } }

    func credentials() async throws -> S3Credentials {
        let key = self.state.withLock { $0.keys[min($0.index, $0.keys.count - 1)] }
        return S3Credentials(accessKeyID: key, secretAccessKey: "secret", sessionToken: "token")
    }

    func invalidate() async {
        self.state.withLock {
            $0.index += 1
            $0.invalidations += 1
        }
    }
}
