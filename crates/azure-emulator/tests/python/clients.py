"""Drives the real Azure SDK for Python against the azure-emulator (and Azurite).

Run by crates/azure-emulator/tests/python_clients.rs, which starts the emulator and Azurite and
passes endpoints on the command line. Prints one JSON object on stdout; any failure raises, so
the process exits non-zero with the SDK's own error.

  clients.py token --cred mi|secret|cert [credential options] --scope SCOPE
  clients.py blob  --cred ... --account-url URL --container NAME --blob NAME --data TEXT
"""

import argparse
import json
import sys

from azure.identity import CertificateCredential, ClientSecretCredential, ManagedIdentityCredential


def credential(args):
    if args.cred == "mi":
        # The IMDS address comes from AZURE_POD_IDENTITY_AUTHORITY_HOST, as on a pod-identity node.
        if args.resource_id:
            return ManagedIdentityCredential(identity_config={"resource_id": args.resource_id})
        return ManagedIdentityCredential(client_id=args.client_id)
    if args.cred == "secret":
        return ClientSecretCredential(
            args.tenant, args.client_id, args.secret, authority=args.authority, disable_instance_discovery=True
        )
    if args.cred == "cert":
        return CertificateCredential(
            args.tenant,
            args.client_id,
            certificate_path=args.cert_path,
            authority=args.authority,
            disable_instance_discovery=True,
        )
    raise SystemExit(f"unknown credential kind {args.cred}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("action", choices=["token", "blob"])
    p.add_argument("--cred", required=True, choices=["mi", "secret", "cert"])
    p.add_argument("--client-id")
    p.add_argument("--resource-id")
    p.add_argument("--tenant")
    p.add_argument("--secret")
    p.add_argument("--cert-path")
    p.add_argument("--authority")
    p.add_argument("--scope", default="https://storage.azure.com/.default")
    p.add_argument("--account-url")
    p.add_argument("--container")
    p.add_argument("--blob")
    p.add_argument("--data")
    args = p.parse_args()
    cred = credential(args)
    if args.action == "token":
        tok = cred.get_token(args.scope)
        print(json.dumps({"token": tok.token, "expires_on": tok.expires_on}))
        return
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient(account_url=args.account_url, credential=cred)
    container = service.get_container_client(args.container)
    if not container.exists():
        container.create_container()
    container.upload_blob(args.blob, args.data.encode(), overwrite=True)
    read = container.download_blob(args.blob).readall().decode()
    names = [b.name for b in container.list_blobs()]
    print(json.dumps({"read": read, "blobs": names}))


if __name__ == "__main__":
    sys.exit(main())
