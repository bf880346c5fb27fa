// Prints an IAM database authentication token made by the AWS SDK for
// JavaScript v3 (@aws-sdk/rds-signer), exactly as an application would make
// one: credentials and region from the SDK's default chain (AWS_* variables).
//
//   node sign.mjs HOSTNAME PORT USERNAME [REGION]
import { Signer } from "@aws-sdk/rds-signer";

const [hostname, port, username, region] = process.argv.slice(2);
if (!hostname || !port || !username) {
  console.error("usage: node sign.mjs HOSTNAME PORT USERNAME [REGION]");
  process.exit(2);
}
const signer = new Signer({ hostname, port: Number(port), username, ...(region ? { region } : {}) });
process.stdout.write((await signer.getAuthToken()) + "\n");
