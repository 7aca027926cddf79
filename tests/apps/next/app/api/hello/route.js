export function GET() {
  return Response.json({ hello: "from the route handler" });
}
