import Foundation

/// A profile of the shared AWS files: static keys, `credential_process`, or a role
/// (`role_arn` with `source_profile`, `credential_source` or `web_identity_token_file`) assumed
/// through STS. The files are read at every refresh.
struct ProfileCredentialSource: CredentialSource {
    let profile: String
    let files: SharedConfigFiles
    let environment: [String: String]
    let http: CredentialHTTP
    /// The region of STS calls when the profile names none.
    let region: String
    var name: String { "profile '\(self.profile)' of \(self.files.credentialsPath) and \(self.files.configPath)" }

    func load() async throws -> S3Credentials? {
        guard self.files.profile(self.profile).exists else { return nil }
        return try await self.credentials(of: self.profile, visited: [])
    }

    private func credentials(of name: String, visited: [String]) async throws -> S3Credentials {
        let profile = self.files.profile(name)
        guard profile.exists else {
            throw S3Error(
                code: .missingCredentials,
                message:
                    "profile '\(name)' (a source_profile of '\(visited.last ?? name)') is in neither \(self.files.credentialsPath) nor \(self.files.configPath)"
            )
        }
        guard !visited.contains(name) || (visited.last == name && profile.staticCredentials != nil), visited.count < 8
        else {
            throw S3Error(
                code: .invalidConfiguration,
                message: "profiles \((visited + [name]).joined(separator: " → ")) form a loop")
        }
        let sts = STSClient(http: self.http, region: profile["region"] ?? self.region, environment: self.environment)
        if let roleARN = profile["role_arn"], visited.last != name {
            let sessionName = profile["role_session_name"] ?? WebIdentityCredentialSource.defaultSessionName()
            if let tokenFile = profile["web_identity_token_file"] {
                return try await WebIdentityCredentialSource(
                    tokenFile: tokenFile, roleARN: roleARN, sessionName: sessionName, sts: sts
                ).load()!
            }
            let source: S3Credentials
            if let sourceProfile = profile["source_profile"] {
                // A profile that is its own source uses its static keys.
                source = try await self.credentials(of: sourceProfile, visited: visited + [name])
            } else if let credentialSource = profile["credential_source"] {
                source = try await self.credentials(fromCredentialSource: credentialSource, profile: name)
            } else {
                throw S3Error(
                    code: .invalidConfiguration,
                    message:
                        "profile '\(name)' has role_arn but no source_profile, credential_source or web_identity_token_file"
                )
            }
            return try await sts.assumeRole(
                roleARN: roleARN,
                sessionName: sessionName,
                externalID: profile["external_id"],
                durationSeconds: profile["duration_seconds"].flatMap(Int.init),
                using: source
            )
        }
        if let command = profile["credential_process"] {
            return try await CredentialProcess(command: command).run()
        }
        if let credentials = profile.staticCredentials { return credentials }
        throw S3Error(
            code: .missingCredentials, message: "profile '\(name)' has no keys, role_arn or credential_process")
    }

    private func credentials(fromCredentialSource kind: String, profile: String) async throws -> S3Credentials {
        let found: S3Credentials?
        switch kind {
        case "Environment":
            found = EnvironmentCredentialSource.credentials(in: self.environment)
        case "EcsContainer":
            found = try await ContainerCredentialSource(environment: self.environment, http: self.http)?.load()
        case "Ec2InstanceMetadata":
            found = try await InstanceMetadataCredentialSource(environment: self.environment, http: self.http)?.load()
        default:
            throw S3Error(
                code: .invalidConfiguration,
                message:
                    "profile '\(profile)' has credential_source '\(kind)'; Environment, EcsContainer and Ec2InstanceMetadata are known"
            )
        }
        guard let found else {
            throw S3Error(
                code: .missingCredentials,
                message: "profile '\(profile)' takes its source credentials from \(kind), which has none")
        }
        return found
    }
}
