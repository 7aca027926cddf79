import Counter from "./counter";

export default function Home() {
  return (
    <main>
      <h1 id="title">Next.js app</h1>
      <Counter />
    </main>
  );
}
