import AsyncHTTPClient
import Foundation
public import Logging
import Panza

/// The AWS SDKs' credential chain, with caching and refresh.
///
/// In order, the first source set up here gives the credentials:
/// 1. environment variables: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`;
/// 2. a web identity token: `AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN` (EKS service
///    accounts, GitHub Actions OIDC), exchanged with STS `AssumeRoleWithWebIdentity`;
/// 3. the profile (`AWS_PROFILE`, or `default`) of the shared files: static keys,
///    `credential_process`, or `role_arn` with `source_profile`/`credential_source`/
///    `web_identity_token_file`, assumed through STS `AssumeRole`;
/// 4. the container endpoint (ECS task roles, EKS Pod Identity):
///    `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` or `_FULL_URI`, with
///    `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` or `_TOKEN`;
/// 5. EC2 instance metadata with IMDSv2 tokens (`AWS_EC2_METADATA_SERVICE_ENDPOINT`;
///    `AWS_EC2_METADATA_DISABLED=true` skips it).
///
/// With an explicit `profile`, only that profile is read. STS is reached at
/// `AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL` or `https://sts.{region}.amazonaws.com`.
///
/// Temporary credentials are fetched again five minutes before they expire, in the background
/// while the current ones still work; an `ExpiredToken` answer from S3 makes ``S3Client`` call
/// ``invalidate()`` and retry once. The environment is read when the chain is made; files and
/// token files at every refresh.
public final class S3CredentialChain: S3CredentialProvider, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    private let sources: [any CredentialSource]
    private let cache: CredentialCache
    private let logger: Logger

    /// A chain reading `environment` (the process's by default) and the shared files.
    ///
    /// - Parameters:
    ///   - profile: the only profile to read; `nil` for the whole chain with `AWS_PROFILE` or `default`.
    ///   - region: the region of STS requests when neither the environment nor the profile gives one.
    ///   - environment: the variables to read (its `AWS_*` ones and `HOME` are kept); the process's
    ///     when `nil`.
    ///   - logger: where the chain logs which source answered and failed refreshes.
    /// - Throws: ``S3Error/Code/missingCredentials`` when no source can be set up at all here
    ///   (instance metadata, when not disabled, is always a candidate: it is asked at the first
    ///   request); ``S3Error/Code/invalidConfiguration`` for a container URI that is not allowed.
    public convenience init(
        profile: String? = nil,
        region: String? = nil,
        environment: [String: String]? = nil,
        logger: Logger? = nil
    ) throws {
        try self.init(
            profile: profile,
            region: region,
            environment: environment ?? ProcessInfo.processInfo.environment,
            http: HTTPClient.shared,
            logger: logger ?? .panzaDisabled
        )
    }

    init(
        profile: String?,
        region: String?,
        environment: [String: String],
        http client: HTTPClient,
        logger: Logger,
        now: @escaping @Sendable () -> Date = Date.init
    ) throws {
        // Only what the chain reads; secrets among them never reach a description (see customMirror).
        let environment = environment.filter { name, _ in name.hasPrefix("AWS_") || name == "HOME" }
        let http = CredentialHTTP(client: client, timeout: .seconds(5))
        let files = SharedConfigFiles(environment: environment)
        let region = S3Region.resolve(region, profile: profile, environment: environment)
        let sts = STSClient(http: http, region: region, environment: environment)
        var sources: [any CredentialSource] = []
        if let profile {
            sources.append(
                ProfileCredentialSource(
                    profile: profile, files: files, environment: environment, http: http, region: region))
        } else {
            sources.append(EnvironmentCredentialSource(environment: environment))
            if let webIdentity = WebIdentityCredentialSource(environment: environment, sts: sts) {
                sources.append(webIdentity)
            }
            let name = environment["AWS_PROFILE"] ?? "default"
            sources.append(
                ProfileCredentialSource(
                    profile: name, files: files, environment: environment, http: http, region: region))
            if let container = try ContainerCredentialSource(environment: environment, http: http) {
                sources.append(container)
            }
            if let metadata = InstanceMetadataCredentialSource(environment: environment, http: http) {
                sources.append(metadata)
            }
        }
        self.sources = sources
        self.logger = logger
        self.cache = CredentialCache(logger: logger, now: now)
        // Say at once when nothing can work: no request could ever find credentials.
        let dynamic = sources.contains {
            $0 is WebIdentityCredentialSource || $0 is ContainerCredentialSource
                || $0 is InstanceMetadataCredentialSource
        }
        let fromFiles = sources.contains {
            ($0 as? ProfileCredentialSource).map { files.profile($0.profile).exists } ?? false
        }
        let fromEnvironment = profile == nil && EnvironmentCredentialSource.credentials(in: environment) != nil
        if !dynamic, !fromFiles, !fromEnvironment {
            throw self.missing()
        }
    }

    /// Cached credentials while they are fresh; otherwise the first source's, fetched once for every caller waiting.
    public func credentials() async throws -> S3Credentials {
        try await self.cache.credentials { [sources, logger] in
            for source in sources {
                if let found = try await source.load() {
                    logger.debug(
                        "panza: S3 credentials from \(source.name)", metadata: ["accessKeyID": "\(found.accessKeyID)"])
                    return found
                }
            }
            throw self.missing()
        }
    }

    /// Forgets the cached credentials: the next call walks the chain again.
    public func invalidate() async {
        await self.cache.invalidate()
    }

    /// The sources, in order; never a secret.
    public var description: String {
        "S3CredentialChain(\(self.sources.map(\.name).joined(separator: ", ")))"
    }

    /// Same as `description`.
    public var debugDescription: String { self.description }

    /// The sources by name only: their settings hold secrets.
    public var customMirror: Mirror {
        Mirror(self, children: ["sources": self.sources.map(\.name)], displayStyle: .class)
    }

    private func missing() -> S3Error {
        S3Error(
            code: .missingCredentials,
            message: "no S3 credentials: looked in \(self.sources.map(\.name).joined(separator: ", ")). "
                + "Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, or a role"
        )
    }
}

/// Where the region comes from when the configuration gives none.
enum S3Region {
    /// `explicit`, then `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region`, then `us-east-1`.
    static func resolve(_ explicit: String?, profile: String?, environment: [String: String]) -> String {
        if let explicit, !explicit.isEmpty { return explicit }
        for name in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
            if let value = environment[name], !value.isEmpty { return value }
        }
        let files = SharedConfigFiles(environment: environment)
        return files.profile(profile ?? environment["AWS_PROFILE"] ?? "default")["region"] ?? "us-east-1"
    }
}
