"""The seed walkthrough's code, unchanged: ManagedIdentityCredential() and BlobServiceClient.

No secret, no client id and no endpoint override: the credential calls
http://169.254.169.254/metadata/identity/oauth2/token like on any Azure VM, and
NMI answers with a token for this pod's own identity.
"""
import os
import sys

from azure.identity import ManagedIdentityCredential
from azure.storage.blob import BlobServiceClient

account_url = os.environ["STORAGE_ACCOUNT_URL"]

credential = ManagedIdentityCredential()
client = BlobServiceClient(account_url, credential=credential)

try:
    blob = client.get_blob_client("demo", "hello.txt").download_blob().readall()
except Exception as e:  # the demo prints why a refused pod got nothing
    print(f"REFUSED: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
    sys.exit(3)
print(f"BLOB: {blob.decode().strip()}")
